import { TsnetDriver } from '../../src/driver/driver';
import type { CreateEndpointRequest } from '../../src/driver/contract';
import { tsnetError } from '../../src/errors';
import { TsnetIpam } from '../../src/ipam/driver';
import { FakeKernel } from '../../src/kernel/fake';
import type { Store } from '../../src/store/contract';
import { SqliteStore } from '../../src/store/sqlite';
import { EID, EID2, NID, NID2, dying, expectCode, netReq, setup } from './driver-fixtures';
import { addNic, childReq, endpoint } from './child-fixtures';
import { startPlugin } from './plugin-fixture';

/**
 * CreateNetwork and CreateEndpoint commit their record pending, build, commit it done and only then answer. A kill
 * anywhere in between leaves a pending record that the next start undoes, so dockerd (which got no success) and
 * tsnet agree; an identical repeat of a create is answered as the first time, a different one refused.
 */

const settle = () => new Promise<void>((r) => setImmediate(r));

/** What tsnet made and keeps, as a test can compare it across runs (no MACs, times or request digests). */
async function snapshot(store: Store, kernel: FakeKernel) {
  const fw = kernel.firewall;
  const sorted = (xs: Iterable<string>) => [...xs].sort();
  return {
    links: [...kernel.linkMap.values()]
      .map((l) => ({ name: l.name, kind: l.kind, up: l.up, master: l.master, lower: l.lower, owner: l.owner, addresses: sorted(l.addresses) }))
      .sort((a, b) => a.name.localeCompare(b.name)),
    routes: kernel.routeTable.map((r) => `${r.dst} dev ${r.dev}`).sort(),
    firewall: { base: fw.base, networks: sorted(fw.networks.keys()), noIccPorts: sorted(fw.noIccPorts), ports: sorted(fw.ports.keys()) },
    networks: (await store.all('network')).map((n) => ({ id: n.id, pending: n.pending })),
    endpoints: (await store.all('endpoint')).map((e) => ({ id: e.id, networkId: e.networkId, pending: e.pending })),
    parents: await store.all('parent'),
    tombstones: (await store.all('tombstone')).map((t) => t.link),
  };
}

type Call = (d: TsnetDriver) => Promise<unknown>;

/** A create sequence and the host it runs on. */
interface Scenario {
  name: string;
  host(kernel: FakeKernel): void;
  calls: Call[];
  /** Kill points of the whole sequence (every store commit and kernel batch). */
  points: number;
}

const V6 = { addressSpace: 'tsnet-local', pool: 'fd00:1::/64', gateway: 'fd00:1::1/64', auxAddresses: {} };
const epReq = (endpointId: string, iface: CreateEndpointRequest['iface'], networkId = NID): CreateEndpointRequest => ({ networkId, endpointId, iface, options: {} });

const SCENARIOS: Scenario[] = [
  {
    name: 'bridge, IPv6, icc=false, two endpoints',
    host: () => undefined,
    calls: [
      (d) => d.createNetwork(netReq({ enableIPv6: true, ipv6: [V6], driverOptions: { 'com.docker.network.bridge.enable_icc': 'false' } })),
      (d) => d.createEndpoint(epReq(EID, { address: '172.28.5.2/16', addressIPv6: 'fd00:1::2/64' })),
      (d) => d.createEndpoint(epReq(EID2, { address: '172.28.5.3/16' })),
    ],
    points: 9,
  },
  {
    name: 'macvlan with a host shim on a VLAN tsnet makes, a second network sharing it, an endpoint',
    host: (kernel) => addNic(kernel, 'eth1'),
    calls: [
      (d) =>
        d.createNetwork(
          childReq(
            'macvlan',
            'eth1.10',
            { ipv4: [{ addressSpace: 'LocalDefault', pool: '192.168.10.0/24', gateway: '192.168.10.1/24', auxAddresses: { host_shim: '192.168.10.250/24' } }] },
            { 'tsnet.host_shim': 'true' },
          ),
        ),
      (d) => d.createNetwork(childReq('macvlan', 'eth1.10', { networkId: NID2, ipv4: [{ addressSpace: 'x', pool: '10.2.0.0/24', auxAddresses: {} }] })),
      (d) => endpoint(d, EID, '192.168.10.5/24'),
    ],
    points: 8,
  },
];

function freshHost(s: Scenario) {
  const store = new SqliteStore(':memory:');
  const kernel = new FakeKernel();
  s.host(kernel);
  return { store, kernel };
}

/** The state after each prefix of the calls, on a run nothing kills: [before any, after the first, ...]. */
async function reference(s: Scenario) {
  const { store, kernel } = freshHost(s);
  const driver = await TsnetDriver.load(store, kernel);
  const states = [await snapshot(store, kernel)];
  for (const call of s.calls) {
    await call(driver);
    await driver.drain();
    states.push(await snapshot(store, kernel));
  }
  return states;
}

describe.each(SCENARIOS)('$name', (s) => {
  test('the creates pass the kill points swept below', async () => {
    const { store, kernel } = freshHost(s);
    const d = dying(store, kernel);
    const driver = await TsnetDriver.load(d.store, d.kernel);
    for (const call of s.calls) await call(driver);
    expect(d.points()).toBe(s.points);
  });

  test.each(Array.from({ length: s.points }, (_, k) => k))(
    'killed at point %i: the restart undoes the cut-off create, keeps the answered ones, and dockerd can make it again',
    async (k) => {
      const states = await reference(s);
      const { store, kernel } = freshHost(s);
      const d = dying(store, kernel, k);
      const driver = await TsnetDriver.load(d.store, d.kernel);
      let answered = 0;
      void (async () => {
        for (const call of s.calls) {
          await call(driver);
          answered++;
        }
      })().catch(() => undefined);
      while (!d.dead()) await settle();

      const restarted = await TsnetDriver.load(store, kernel);
      await restarted.reconcile();
      await restarted.drain();
      // Exactly what dockerd was told exists, nothing of the call it got no answer to.
      expect(await snapshot(store, kernel)).toEqual(states[answered]);
      expect(restarted.state().networks.concat().filter((n) => n.pending)).toEqual([]);
      expect(restarted.state().endpoints.filter((e) => e.pending)).toEqual([]);

      // dockerd (or its user) sends the cut-off call again: nothing stands in its way.
      for (const call of s.calls.slice(answered)) await call(restarted);
      await restarted.drain();
      expect(await snapshot(store, kernel)).toEqual(states[s.calls.length]);
    },
  );
});

describe('a host shim address from tsnet IPAM', () => {
  async function shimHost(killAt: number) {
    const store = new SqliteStore(':memory:');
    const kernel = new FakeKernel();
    addNic(kernel, 'eth1');
    const options = { defaultPoolsV4: [], defaultPoolsV6: [], hostRoutes: () => Promise.resolve([]) };
    const ipam = await TsnetIpam.load(store, options);
    const pool = await ipam.requestPool({ addressSpace: 'tsnet-local', pool: '192.168.10.0/24', subPool: '', options: {}, v6: false });
    // The IPAM's own commit is not a kill point here: only the driver's commits and batches are.
    const d = dying(store, kernel, killAt);
    const driver = await TsnetDriver.load(d.store, d.kernel, ipam.hostAddresses);
    void driver.createNetwork(childReq('macvlan', 'eth1', { ipv4: [{ addressSpace: 'tsnet-local', pool: '192.168.10.0/24', auxAddresses: {} }] }, { 'tsnet.host_shim': 'true' })).catch(() => undefined);
    while (!d.dead() && d.points() < 3) await settle();
    const restartedIpam = await TsnetIpam.load(store, options);
    const restarted = await TsnetDriver.load(store, kernel, restartedIpam.hostAddresses);
    await restarted.reconcile();
    await restarted.drain();
    return { store, kernel, restarted, pool };
  }

  // Points: 0 the pending commit, 1 the shim's batch, 2 the done commit.
  test.each([1, 2])('killed at point %i (after the pending commit): the restart deletes the shim and gives its address back', async (k) => {
    const { store, kernel } = await shimHost(k);
    expect(await store.all('network')).toEqual([]);
    expect(await store.all('address')).toEqual([]);
    expect([...kernel.linkMap.keys()]).toEqual(['eth1']);
  });

  test('not killed: the shim keeps its address across the restart', async () => {
    const { store, kernel, pool } = await shimHost(Infinity);
    expect(await store.all('address')).toEqual([expect.objectContaining({ poolId: pool.poolId, kind: 'address' })]);
    expect(kernel.linkMap.get('tshs-aaaaaaaaaa')).toMatchObject({ up: true });
  });
});

describe('a create whose done commit fails', () => {
  /** A store whose commits matching `fails` throw, as long as `failing` says so. */
  function failingStore(store: Store, fails: (ops: Parameters<Store['commit']>[0]) => boolean) {
    const ctl = { failing: true };
    const wrapped: Store = {
      all: (c) => store.all(c),
      commit: (ops) => (ctl.failing && fails(ops) ? Promise.reject(tsnetError('TSN_STORE', 'state commit failed: disk full')) : store.commit(ops)),
      close: () => store.close(),
    };
    return { wrapped, ctl };
  }
  type Ops = Parameters<Store['commit']>[0];
  /** A commit putting a record still pending (the first of a create). */
  const putsPending = (ops: Ops) => ops.some((o) => o.kind === 'put' && 'pending' in o.value && o.value.pending === true);
  // The done commit is the one put of a network or endpoint that is not pending.
  const doneCommit = (ops: Ops) => ops.length === 1 && ops[0].kind === 'put' && (ops[0].collection === 'network' || ops[0].collection === 'endpoint') && !putsPending(ops);

  test('is refused and undone at once: nothing left in the kernel or the store', async () => {
    const store = new SqliteStore(':memory:');
    const kernel = new FakeKernel();
    const { wrapped } = failingStore(store, doneCommit);
    const driver = await TsnetDriver.load(wrapped, kernel);
    await expectCode(driver.createNetwork(netReq({ driverOptions: { 'com.docker.network.bridge.enable_icc': 'false' } })), 'TSN_STORE');
    await driver.drain();
    expect(driver.state().networks).toEqual([]);
    expect(await store.all('network')).toEqual([]);
    expect(await store.all('tombstone')).toEqual([]);
    expect([...kernel.linkMap.keys()]).toEqual([]);
    expect(kernel.firewall.networks.size).toBe(0);
  });

  test('an endpoint likewise; when the undo cannot commit either, the record stays pending and the next identical create succeeds', async () => {
    const store = new SqliteStore(':memory:');
    const kernel = new FakeKernel();
    const driver0 = await TsnetDriver.load(store, kernel);
    await driver0.createNetwork(netReq());
    // Every endpoint commit but the pending one fails: the done commit and the undo's removal.
    const { wrapped, ctl } = failingStore(store, (ops) => ops.some((o) => o.collection === 'endpoint') && !putsPending(ops));
    const driver = await TsnetDriver.load(wrapped, kernel);
    await driver.reconcile();
    const req = epReq(EID, { address: '172.28.5.2/16' });
    await expectCode(driver.createEndpoint(req), 'TSN_STORE');
    expect(driver.state().endpoints).toEqual([expect.objectContaining({ id: EID, pending: true })]);
    expect((await store.all('endpoint'))[0]).toMatchObject({ id: EID, pending: true });
    ctl.failing = false;
    const reply = await driver.createEndpoint(req);
    expect(reply).toEqual({ macAddress: '02:42:ac:1c:05:02' });
    expect((await store.all('endpoint'))[0]).not.toHaveProperty('pending');
    expect(kernel.linkMap.get('tsvbbbbbbbbbbbb')).toMatchObject({ master: 'tsbr-aaaaaaaaaa', up: true });
  });
});

describe('repeated creates (dockerd retries a call it got no answer to)', () => {
  test('an identical CreateNetwork succeeds and changes nothing: no kernel or firewall call, records unchanged', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq({ driverOptions: { 'com.docker.network.driver.mtu': '1450', 'com.docker.network.bridge.enable_icc': 'false' } }));
    const before = { applied: kernel.applied.length, fw: kernel.firewall.calls.length, reads: kernel.reads.length, records: await store.all('network') };
    // Key order is not part of the request.
    await driver.createNetwork(netReq({ driverOptions: { 'com.docker.network.bridge.enable_icc': 'false', 'com.docker.network.driver.mtu': '1450' } }));
    expect({ applied: kernel.applied.length, fw: kernel.firewall.calls.length, reads: kernel.reads.length, records: await store.all('network') }).toEqual(before);
  });

  test('a different CreateNetwork for the id is refused naming what differs, and changes nothing', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    const before = await snapshot(store, kernel);
    const applied = kernel.applied.length;
    const err = await expectCode(driver.createNetwork(netReq({ internal: true, driverOptions: { 'com.docker.network.bridge.enable_icc': 'false' } })), 'TSN_NETWORK_EXISTS');
    expect(err.message).toMatch(/driverOptions, internal differ/);
    expect(await snapshot(store, kernel)).toEqual(before);
    expect(kernel.applied.length).toBe(applied);
  });

  test('an identical CreateEndpoint gets the first reply again (the MAC tsnet picked) and changes nothing', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    const req = { ...epReq(EID, { address: '172.28.5.2/16' }), options: { 'com.docker.network.endpoint.exposedports': [{ Proto: 6, Port: 80 }] } };
    const first = await driver.createEndpoint(req);
    expect(first).toEqual({ macAddress: '02:42:ac:1c:05:02' });
    const before = { applied: kernel.applied.length, fw: kernel.firewall.calls.length, records: await store.all('endpoint') };
    expect(await driver.createEndpoint(structuredClone(req))).toEqual(first);
    expect({ applied: kernel.applied.length, fw: kernel.firewall.calls.length, records: await store.all('endpoint') }).toEqual(before);
    // dockerd chose the MAC: tsnet filled nothing, the first time or the second.
    const withMac = epReq(EID2, { address: '172.28.5.3/16', macAddress: '02:42:ac:1c:05:99' });
    expect(await driver.createEndpoint(withMac)).toEqual({});
    expect(await driver.createEndpoint(withMac)).toEqual({});
  });

  test('a different CreateEndpoint for the id (another address, another network) is refused naming what differs, and changes nothing', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    await driver.createNetwork(netReq({ networkId: NID2, ipv4: [{ addressSpace: 'x', pool: '10.3.0.0/24', gateway: '10.3.0.1/24', auxAddresses: {} }] }));
    await driver.createEndpoint(epReq(EID, { address: '172.28.5.2/16' }));
    const before = await snapshot(store, kernel);
    const err = await expectCode(driver.createEndpoint(epReq(EID, { address: '172.28.5.3/16' })), 'TSN_ENDPOINT_EXISTS');
    expect(err.message).toMatch(/iface differ/);
    const other = await expectCode(driver.createEndpoint(epReq(EID, { address: '10.3.0.2/24' }, NID2)), 'TSN_ENDPOINT_EXISTS');
    expect(other.message).toMatch(/iface, networkId differ/);
    expect(await snapshot(store, kernel)).toEqual(before);
  });

  test('records made before tsnet kept requests: any repeat is refused as before; they are neither pending nor undone', async () => {
    const store = new SqliteStore(':memory:');
    const kernel = new FakeKernel();
    const old = await TsnetDriver.load(store, kernel);
    await old.createNetwork(netReq());
    await old.createEndpoint(epReq(EID, { address: '172.28.5.2/16' }));
    // As an earlier tsnet wrote them: no requestDigest, no pending.
    for (const n of await store.all('network')) await store.commit([{ kind: 'put', collection: 'network', key: n.id, value: { ...n, requestDigest: undefined } }]);
    for (const e of await store.all('endpoint')) await store.commit([{ kind: 'put', collection: 'endpoint', key: e.id, value: { ...e, requestDigest: undefined } }]);
    kernel.linkMap.delete('tsvbbbbbbbbbbbb');
    kernel.linkMap.delete('tscbbbbbbbbbbbb');
    const driver = await TsnetDriver.load(store, kernel);
    await driver.reconcile();
    // Reconcile rebuilds the endpoint's lost veth, as it always did.
    expect(kernel.linkMap.get('tsvbbbbbbbbbbbb')).toMatchObject({ master: 'tsbr-aaaaaaaaaa' });
    expect((await expectCode(driver.createNetwork(netReq()), 'TSN_NETWORK_EXISTS')).message).toMatch(/made before tsnet kept requests/);
    await expectCode(driver.createEndpoint(epReq(EID, { address: '172.28.5.2/16' })), 'TSN_ENDPOINT_EXISTS');
    expect(driver.state().endpoints.map((e) => e.id)).toEqual([EID]);
  });

  test('on the wire: a resent identical CreateEndpoint gets the same Interface; one resent with an empty body (moby#39331) is refused and changes nothing', async () => {
    const fx = await startPlugin();
    try {
      await fx.call('NetworkDriver.CreateNetwork', {
        NetworkID: NID,
        Options: { 'com.docker.network.generic': {} },
        IPv4Data: [{ AddressSpace: 'tsnet-local', Pool: '172.28.0.0/16', Gateway: '172.28.5.254/16' }],
      });
      const body = { NetworkID: NID, EndpointID: EID, Interface: { Address: '172.28.5.2/16', AddressIPv6: '', MacAddress: '' }, Options: {} };
      const first = await fx.call('NetworkDriver.CreateEndpoint', body);
      expect(first).toMatchObject({ status: 200, body: { Interface: { MacAddress: '02:42:ac:1c:05:02' } } });
      const before = await snapshot(fx.store, fx.kernel);
      expect((await fx.call('NetworkDriver.CreateEndpoint', body)).body).toEqual(first.body);
      const empty = await fx.call('NetworkDriver.CreateEndpoint', '');
      expect(empty.body).toHaveProperty('Err');
      expect(await snapshot(fx.store, fx.kernel)).toEqual(before);
    } finally {
      await fx.close();
    }
  });
});

/**
 * Join and ProgramExternalConnectivity commit before they build too, but need no pending state: what they add (a
 * sandbox key, a macvlan child, published ports) stays a superset in the store, and dockerd, which got no answer,
 * fails the container start and sends Revoke, Leave and DeleteEndpoint, which remove it whatever was done.
 */
describe('Join and ProgramExternalConnectivity cut off at any point', () => {
  const EID3 = 'e'.repeat(64);
  const PORT = [{ proto: 'sctp' as const, port: 9, hostPort: 40021, hostPortEnd: 40021 }];
  const macvlan = childReq('macvlan', 'eth1', { networkId: NID2 });
  async function made(killAt: number) {
    const store = new SqliteStore(':memory:');
    const kernel = new FakeKernel();
    addNic(kernel, 'eth1');
    const d = dying(store, kernel, killAt);
    const driver = await TsnetDriver.load(d.store, d.kernel);
    await driver.createNetwork(netReq());
    await driver.createEndpoint(epReq(EID, { address: '172.28.5.2/16' }));
    await driver.createNetwork(macvlan);
    await endpoint(driver, EID2, '192.168.10.5/24', NID2);
    return { store, kernel, driver, d };
  }
  const calls: Call[] = [
    (d) => d.join({ networkId: NID, endpointId: EID, sandboxKey: '/var/run/docker/netns/a', options: {} }),
    (d) => d.programExternalConnectivity({ networkId: NID, endpointId: EID, portBindings: PORT }),
    (d) => d.join({ networkId: NID2, endpointId: EID2, sandboxKey: '/var/run/docker/netns/b', options: {} }),
  ];
  /** Commits and batches of the four creates above, then of the three calls. */
  const SETUP = 11;
  const POINTS = 4;

  test('the calls pass the kill points swept below', async () => {
    const { driver, d } = await made(Infinity);
    expect(d.points()).toBe(SETUP);
    for (const call of calls) await call(driver);
    expect(d.points()).toBe(SETUP + POINTS);
  });

  test.each(Array.from({ length: POINTS }, (_, k) => k))('killed at point %i: after the restart, dockerd’s clean-up leaves the networks alone and the host port free', async (k) => {
    const { store, kernel, d, driver } = await made(SETUP + k);
    void (async () => {
      for (const call of calls) await call(driver);
    })().catch(() => undefined);
    while (!d.dead()) await settle();
    const restarted = await TsnetDriver.load(store, kernel);
    await restarted.reconcile();
    for (const [networkId, endpointId] of [
      [NID, EID],
      [NID2, EID2],
    ]) {
      await restarted.revokeExternalConnectivity(networkId, endpointId);
      await restarted.leave(networkId, endpointId);
      await restarted.deleteEndpoint(networkId, endpointId);
    }
    await restarted.drain();
    expect(await store.all('endpoint')).toEqual([]);
    expect([...kernel.linkMap.keys()].sort()).toEqual(['eth1', 'tsbr-aaaaaaaaaa']);
    expect(kernel.firewall.ports.size).toBe(0);
    // The host port is free again: the next container gets it.
    await restarted.createEndpoint(epReq(EID3, { address: '172.28.5.3/16' }));
    await restarted.join({ networkId: NID, endpointId: EID3, sandboxKey: '/var/run/docker/netns/c', options: {} });
    await restarted.programExternalConnectivity({ networkId: NID, endpointId: EID3, portBindings: PORT });
    expect([...kernel.firewall.ports.values()]).toEqual([expect.objectContaining({ hostPort: 40021, containerIp: '172.28.5.3' })]);
    await restarted.stop();
  });
});

test('undoPending beside a create in progress leaves it alone: pending only until its lock is released, then done', async () => {
  const { store, kernel, driver } = await setup();
  await driver.createNetwork(netReq());
  const held = kernel.pauseAt((c) => c.call === 'apply' && c.change.op === 'veth.add');
  const creating = driver.createEndpoint(epReq(EID, { address: '172.28.5.2/16' }));
  await held.reached;
  expect((await store.all('endpoint'))[0]).toMatchObject({ id: EID, pending: true });
  const undoing = driver.undoPending();
  held.release();
  await Promise.all([creating, undoing]);
  expect(driver.state().endpoints).toEqual([expect.objectContaining({ id: EID })]);
  expect((await store.all('endpoint'))[0]).not.toHaveProperty('pending');
  expect(kernel.linkMap.get('tsvbbbbbbbbbbbb')).toMatchObject({ master: 'tsbr-aaaaaaaaaa', up: true });
});
