import { TsnetDriver } from '../../src/driver/driver';
import { describeRepair, planReconcile, type ReconcileInput, type Repair } from '../../src/driver/reconcile-plan';
import type { FwPort, LinkInfo } from '../../src/kernel/contract';
import { FakeKernel } from '../../src/kernel/fake';
import type { EndpointRecord } from '../../src/store/records';
import { SqliteStore } from '../../src/store/sqlite';
import { EID, EID2, NID, netReq } from './driver-fixtures';

const BRIDGE = 'tsbr-aaaaaaaaaa';
const HOST_VETH = 'tsvbbbbbbbbbbbb';
const JOINED_VETH = 'tsvdddddddddddd';
const JOINED_PEER = 'tscdddddddddddd';
const PORT: FwPort = { proto: 'tcp', hostPort: 8080, containerIp: '172.28.5.2', containerPort: 80 };

/**
 * A converged host, as the driver left it on the fake kernel: one bridge network, an unjoined endpoint (both veth
 * ends in the host namespace) and a joined one (its container end moved away), the firewall as the driver made it.
 */
async function converged() {
  const store = new SqliteStore(':memory:');
  const kernel = new FakeKernel();
  const driver = await TsnetDriver.load(store, kernel);
  await driver.createNetwork(netReq());
  await driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.2/16' }, options: {} });
  await driver.createEndpoint({ networkId: NID, endpointId: EID2, iface: { address: '172.28.5.3/16' }, options: {} });
  await driver.join({ networkId: NID, endpointId: EID2, sandboxKey: '/var/run/docker/netns/x', options: {} });
  // dockerd moves the joined endpoint's container end into its sandbox.
  kernel.linkMap.delete(JOINED_PEER);
  return { store, kernel, driver };
}

type Host = Awaited<ReturnType<typeof converged>>;

async function inputOf({ kernel, driver, store }: Host, change: (i: ReconcileInput) => ReconcileInput = (i) => i): Promise<ReconcileInput> {
  const state = driver.state();
  return change({
    owner: kernel.owner,
    networks: state.networks,
    endpoints: state.endpoints,
    parents: state.parents,
    tombstones: (await store.all('tombstone')).map((t) => t.link),
    forwardGuard: [],
    links: new Map((await kernel.links()).map((l) => [l.name, l])),
    routes: await kernel.routes(false),
    sysctls: new Map(kernel.sysctls),
    firewall: await kernel.firewall.inspect(),
    heldPorts: new Set(),
  });
}

/** The host's links with one changed (undefined: removed) or added. */
function withLink(i: ReconcileInput, name: string, link: LinkInfo | undefined): ReconcileInput {
  const links = new Map(i.links);
  if (link) links.set(name, link);
  else links.delete(name);
  return { ...i, links };
}

const veth = (name: string, owner: string, peer?: string): LinkInfo => ({ name, kind: 'veth', owner, mtu: 1500, mac: '02:00:00:00:00:09', up: true, addresses: [], ...(peer ? { lower: peer } : {}) });

/** Kind and subject of each repair, the shape the cases compare. */
const summary = (plan: Repair[]) =>
  plan.map((r) => {
    switch (r.kind) {
      case 'tombstone':
      case 'orphan':
        return `${r.kind} ${r.link}`;
      case 'firewall-elements':
        return `${r.kind} ${r.set} +[${r.add.join(',')}] -[${r.remove.join(',')}]`;
      case 'network':
      case 'endpoint-changes':
      case 'endpoint-rebuild':
      case 'parent':
        return `${r.kind} ${r.changes.map((c) => c.op + ('name' in c ? ` ${c.name}` : 'key' in c ? ` ${c.key}` : ` ${c.dev} ${'cidr' in c ? c.cidr : c.dst}`)).join(' ')}`;
      case 'endpoint-drop':
      case 'endpoint-lost':
      case 'firewall-hook':
      case 'firewall-remove':
      case 'firewall-sync':
      case 'ports':
        return r.kind;
    }
  });

describe('planReconcile', () => {
  test('a converged host gives an empty plan', async () => {
    expect(planReconcile(await inputOf(await converged()))).toEqual([]);
  });

  const cases: Array<[string, (h: Host, i: ReconcileInput) => ReconcileInput, string[]]> = [
    [
      'missing bridge → recreate it whole, its sysctls included whatever was read under its name',
      (_h, i) => withLink(i, BRIDGE, undefined),
      [
        `network bridge.add ${BRIDGE}`,
        `network addr.add ${BRIDGE} 172.28.5.254/16`,
        `network link.up ${BRIDGE}`,
        'network sysctl.set net/ipv6/conf/tsbr-aaaaaaaaaa/disable_ipv6 sysctl.set net/ipv4/conf/tsbr-aaaaaaaaaa/route_localnet',
      ],
    ],
    [
      'lost gateway address → re-add only it',
      (_h, i) => withLink(i, BRIDGE, { ...i.links.get(BRIDGE)!, addresses: [] }),
      [`network addr.add ${BRIDGE} 172.28.5.254/16`],
    ],
    ['a sysctl reset by the host → write only it', (_h, i) => ({ ...i, sysctls: new Map([...i.sysctls, ['net/ipv4/ip_forward', '0']]) }), ['network sysctl.set net/ipv4/ip_forward']],
    ['unjoined endpoint lost its veth pair → recreate it', (_h, i) => withLink(withLink(i, HOST_VETH, undefined), 'tscbbbbbbbbbbbb', undefined), [`endpoint-rebuild veth.add ${HOST_VETH} link.master ${HOST_VETH} link.up ${HOST_VETH}`]],
    ['joined endpoint lost its veth → nothing to rebuild (dockerd cleans up), said so', (_h, i) => withLink(i, JOINED_VETH, undefined), ['endpoint-lost']],
    ['host veth off its bridge and down → attach and bring up', (_h, i) => withLink(i, HOST_VETH, { ...i.links.get(HOST_VETH)!, master: undefined, up: false }), [`endpoint-changes link.master ${HOST_VETH} link.up ${HOST_VETH}`]],
    [
      "a joined endpoint's container end still in the host namespace is not an orphan",
      (h, i) => withLink(i, JOINED_PEER, veth(JOINED_PEER, h.kernel.owner, JOINED_VETH)),
      [],
    ],
    ['own orphan veth → delete it', (h, i) => withLink(i, 'tsv000000000000', veth('tsv000000000000', h.kernel.owner, 'tsc000000000000')), ['orphan tsv000000000000']],
    ['foreign-owner look-alike → untouched', (_h, i) => withLink(i, 'tsv111111111111', veth('tsv111111111111', 'tsnet:other')), []],
    ['untagged look-alike → untouched', (_h, i) => withLink(i, 'tsv222222222222', { ...veth('tsv222222222222', ''), owner: undefined }), []],
    ['tombstoned link still there → delete it first', (h, i) => withLink({ ...i, tombstones: ['tsv333333333333'] }, 'tsv333333333333', veth('tsv333333333333', h.kernel.owner)), ['tombstone tsv333333333333']],
    ['tombstone of a link already gone → forget it', (_h, i) => ({ ...i, tombstones: ['tsv444444444444'] }), ['tombstone tsv444444444444']],
    [
      'extra DNAT element no record has → remove it',
      (_h, i) => ({ ...i, firewall: { ...i.firewall, elements: { ...i.firewall.elements, dnat4any: ['tcp . 9999 : 172.28.5.9 . 80'] } } }),
      ['firewall-elements dnat4any +[] -[tcp . 9999 : 172.28.5.9 . 80]'],
    ],
    [
      'published port whose element is missing → add it, and hold its host port',
      (_h, i) => ({ ...i, endpoints: i.endpoints.map((e): EndpointRecord => (e.id === EID ? { ...e, ports: [PORT] } : e)) }),
      ['firewall-elements dnat4any +[tcp . 8080 : 172.28.5.2 . 80] -[]', 'ports'],
    ],
    ['a held port is not taken again', (_h, i) => ({ ...i, endpoints: i.endpoints.map((e): EndpointRecord => (e.id === EID ? { ...e, ports: [PORT] } : e)), firewall: { ...i.firewall, elements: { ...i.firewall.elements, dnat4any: ['tcp . 8080 : 172.28.5.2 . 80'] } }, heldPorts: new Set([EID]) }), []],
    ['missing network element → add it', (_h, i) => ({ ...i, firewall: { ...i.firewall, elements: { ...i.firewall.elements, bridges: [] } } }), [`firewall-elements bridges +["${BRIDGE}"] -[]`]],
    ['damaged table → full sync', (_h, i) => ({ ...i, firewall: { ...i.firewall, table: 'damaged', why: 'chain inet forward has 3 rules, not 10' } }), ['firewall-sync']],
    ['table gone → full sync', (_h, i) => ({ ...i, firewall: { ...i.firewall, table: 'absent' } }), ['firewall-sync']],
    ['DOCKER-USER rule gone → put it back', (_h, i) => ({ ...i, firewall: { ...i.firewall, hookMissing: true } }), ['firewall-hook']],
    ['forward guard recorded but not in the table → add it', (_h, i) => ({ ...i, forwardGuard: ['ipv4'] }), ['firewall-elements fwdguard +[ipv4] -[]']],
    [
      'no record left: own links are orphans, the table goes',
      (_h, i) => ({ ...i, networks: [], endpoints: [] }),
      [`orphan ${BRIDGE}`, `orphan ${HOST_VETH}`, 'orphan tscbbbbbbbbbbbb', `orphan ${JOINED_VETH}`, 'firewall-remove'],
    ],
    ['endpoint of a network without record → drop the record', (_h, i) => ({ ...i, endpoints: [...i.endpoints, { ...i.endpoints[0], id: 'e'.repeat(64), networkId: 'f'.repeat(64) }] }), ['endpoint-drop']],
  ];

  test.each(cases)('%s', async (_name, change, want) => {
    const h = await converged();
    const plan = planReconcile(await inputOf(h, (i) => change(h, i)));
    expect(summary(plan)).toEqual(want);
    // Every repair renders as one line naming what it is for.
    for (const r of plan) expect(describeRepair(r)).toMatch(/^[^\n]+\([^)]+\)$/);
  });

  test('lines people read: a lost bridge names the network, the changes and why', async () => {
    const h = await converged();
    const [first] = planReconcile(await inputOf(h, (i) => withLink(i, BRIDGE, undefined)));
    expect(describeRepair(first)).toBe(`network aaaaaaaaaaaa: create bridge: create bridge ${BRIDGE} (${BRIDGE} is missing)`);
  });
});

describe('reconcile applies the plan', () => {
  test('nothing differs: no kernel change, no firewall change', async () => {
    const h = await converged();
    const applied = h.kernel.applied.length;
    const calls = h.kernel.firewall.calls.length;
    await (await TsnetDriver.load(h.store, h.kernel)).reconcile();
    expect(h.kernel.applied.slice(applied)).toEqual([]);
    expect(h.kernel.firewall.calls.slice(calls)).toEqual(['inspect']);
  });

  test('a stray element is removed by a patch, not a rebuild, and records stay as they were', async () => {
    const h = await converged();
    h.kernel.firewall.ports.set('stray', { ...PORT, hostPort: 9999 });
    const calls = h.kernel.firewall.calls.length;
    await (await TsnetDriver.load(h.store, h.kernel)).reconcile();
    expect(h.kernel.firewall.calls.slice(calls)).toEqual(['inspect', 'sync patch 1']);
    expect([...h.kernel.firewall.ports.values()]).toEqual([]);
    expect(h.kernel.firewall.networks.has(BRIDGE)).toBe(true);
  });

  test('all link work goes to the kernel in one batch; a failing repair is rolled back alone', async () => {
    const h = await converged();
    // Both endpoints' host ends off the bridge, and one orphan: three repairs in one apply.
    for (const v of [HOST_VETH, JOINED_VETH]) delete h.kernel.linkMap.get(v)!.master;
    await h.kernel.apply([{ op: 'veth.add', name: 'tsv000000000000', peer: 'tsc000000000000' }]);
    const batches: number[] = [];
    const apply = h.kernel.apply.bind(h.kernel);
    h.kernel.apply = (changes) => (batches.push(changes.length), apply(changes));
    h.kernel.failOn((c) => c.op === 'link.master' && c.name === HOST_VETH, 'injected');
    await (await TsnetDriver.load(h.store, h.kernel)).reconcile();
    // One batch of everything (two attaches, the orphan pair's two deletions); after the failure, the rest.
    expect(batches[0]).toBe(4);
    expect(h.kernel.linkMap.get(JOINED_VETH)?.master).toBe(BRIDGE);
    expect(h.kernel.linkMap.get(HOST_VETH)?.master).toBeUndefined();
    expect(h.kernel.linkMap.has('tsv000000000000')).toBe(false);
  });
});
