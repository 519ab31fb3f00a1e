import type { DockerFeed, DockerStatus, NetworkInfo } from '../../src/docker/contract';
import { TsnetDriver } from '../../src/driver/driver';
import { TsnetIpam } from '../../src/ipam/driver';
import { FakeKernel } from '../../src/kernel/fake';
import { Reclaim } from '../../src/reclaim';
import { promiseFirstUse } from '../../src/reclaim/trust';
import { del } from '../../src/store/contract';
import { SqliteStore } from '../../src/store/sqlite';
import { FakeDocker, type FakeNetwork } from '../harness/fake-docker';

const NAME = 'tsnetrc';
const NID = '1'.repeat(64);
const EID = '2'.repeat(64);
const EID2 = '3'.repeat(64);
const NID2 = '5'.repeat(64);
const CID = '4'.repeat(64);
const GRACE = 60_000;
const PORT = { proto: 'tcp' as const, port: 80, hostPort: 47_081, hostPortEnd: 47_081 };

/** The grace timer, fired by hand: the test decides when the grace is over. */
class GraceTimer {
  readonly delays: number[] = [];
  private fn: (() => void) | undefined;
  setTimeout(fn: () => void, ms: number): NodeJS.Timeout {
    this.delays.push(ms);
    this.fn = fn;
    return {} as NodeJS.Timeout;
  }
  clearTimeout(): void {
    this.fn = undefined;
  }
  get waiting(): boolean {
    return this.fn !== undefined;
  }
  fire(): void {
    const fn = this.fn;
    this.fn = undefined;
    if (!fn) throw new Error('no grace timer pending');
    fn();
  }
}

/** The feed's status and network hooks: the test says when Docker's API is up or down and when its networks change. */
class StatusFeed implements DockerFeed {
  private readonly listeners: Array<(s: DockerStatus) => void> = [];
  private readonly networkListeners: Array<(n: ReadonlyArray<NetworkInfo>) => void> = [];
  onContainers(): void {}
  onNetworks(l: (n: ReadonlyArray<NetworkInfo>) => void): void {
    this.networkListeners.push(l);
  }
  networksChanged(): void {
    for (const l of this.networkListeners) l([]);
  }
  onStatus(l: (s: DockerStatus) => void): void {
    this.listeners.push(l);
  }
  start(): void {}
  async stop(): Promise<void> {}
  up(): void {
    for (const l of this.listeners) l({ up: true, apiVersion: '1.47' });
  }
  down(): void {
    for (const l of this.listeners) l({ up: false, error: 'gone' });
  }
}

/** Polls real I/O (the fake daemon's socket); fails after many turns, never on elapsed time. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`never: ${what}`);
}

const worlds: Array<{ docker: FakeDocker; reclaim: Reclaim; driver: TsnetDriver }> = [];
afterEach(async () => {
  for (const w of worlds.splice(0)) {
    await w.reclaim.stop();
    await w.driver.stop();
    await w.docker.destroy();
  }
});

/**
 * tsnet with one network on its own pool (gateway, aux address), one joined endpoint at 172.28.5.10 with a published
 * port, and a fake Docker that has all of it.
 */
async function world() {
  const docker = new FakeDocker({ apiVersion: '1.47', minApiVersion: '1.24' });
  await docker.start();
  const store = new SqliteStore(':memory:');
  const kernel = new FakeKernel();
  const ipam = await TsnetIpam.load(store, { defaultPoolsV4: [], defaultPoolsV6: [], hostRoutes: async () => [] });
  const driver = await TsnetDriver.load(store, kernel, ipam.hostAddresses);
  const feed = new StatusFeed();
  const timers = new GraceTimer();
  const reclaim = await Reclaim.load({ driverName: NAME, dockerSocket: docker.socketPath, graceMs: GRACE, feed, driver, ipam, store, timers });
  worlds.push({ docker, reclaim, driver });

  const pool = await ipam.requestPool({ addressSpace: '', pool: '172.28.0.0/16', subPool: '172.28.5.0/24', options: {}, v6: false });
  const gw = await ipam.requestAddress({ poolId: pool.poolId, address: '172.28.5.254', options: { RequestAddressType: 'com.docker.network.gateway' } });
  await ipam.requestAddress({ poolId: pool.poolId, address: '172.28.5.1', options: {} });
  await driver.createNetwork({
    networkId: NID,
    driverOptions: {},
    enableIPv6: false,
    internal: false,
    ipv4: [{ addressSpace: 'tsnet-local', pool: '172.28.0.0/16', gateway: gw.address, auxAddresses: { r: '172.28.5.1/16' } }],
    ipv6: [],
  });
  const addr = await ipam.requestAddress({ poolId: pool.poolId, address: '172.28.5.10', options: {} });
  await driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: addr.address }, options: {} });
  await driver.join({ networkId: NID, endpointId: EID, sandboxKey: '/var/run/docker/netns/c1', options: {} });
  await driver.programExternalConnectivity({ networkId: NID, endpointId: EID, portBindings: [PORT] });

  const net: FakeNetwork = {
    id: NID,
    name: 'n1',
    driver: NAME,
    internal: false,
    ipamDriver: NAME,
    // Docker shows no gateway when --gateway was not given: tsnet's gateway record must survive that.
    ipamConfig: [{ Subnet: '172.28.0.0/16', IPRange: '172.28.5.0/24', AuxiliaryAddresses: { r: '172.28.5.1' } }],
    endpoints: { [CID]: { EndpointID: EID, IPv4Address: '172.28.5.10/16' } },
  };
  docker.addNetwork(net);
  const addresses = () => ipam.allocations().addresses.map((a) => a.address).sort();
  const endpoints = () => driver.state().endpoints.map((e) => e.id);
  return { docker, store, kernel, ipam, driver, feed, timers, reclaim, net, poolId: pool.poolId, addresses, endpoints };
}

type World = Awaited<ReturnType<typeof world>>;

/** `docker rm -f` while tsnet was away: Docker forgot the container's endpoint (tsnet was never told). */
function forgetContainer(w: World): void {
  w.net.endpoints = {};
}

/** A pass that finds candidates, up to its grace timer. */
async function lookOnce(w: World): Promise<void> {
  w.feed.up();
  await until(() => w.timers.waiting, 'the grace timer');
}

/** Fires grace timers until the pass ends: a removal starts a fresh look (a network's pool goes after the network). */
async function graceOver(w: World): Promise<void> {
  for (;;) {
    w.timers.fire();
    const pass = { ended: false };
    const idle = w.reclaim.idle().then(() => {
      pass.ended = true;
    });
    await until(() => pass.ended || w.timers.waiting, 'the pass ends or waits out another grace');
    if (pass.ended) return idle;
  }
}

test('Docker has everything: nothing is a candidate, no grace is waited, nothing changes', async () => {
  const w = await world();
  w.feed.up();
  await until(() => w.docker.requests.some((r) => r.endsWith(`/networks/${NID}`)), 'network inspected');
  await w.reclaim.idle();
  expect(w.timers.delays).toEqual([]);
  expect(w.endpoints()).toEqual([EID]);
  expect(w.addresses()).toEqual(['172.28.5.1', '172.28.5.10', '172.28.5.254']);
});

test('an endpoint Docker forgot goes after the grace with its address, DNAT element and held port; the rest stays', async () => {
  const w = await world();
  forgetContainer(w);
  await lookOnce(w);
  expect(w.timers.delays).toEqual([GRACE]);
  // Nothing goes before the grace is over.
  expect(w.endpoints()).toEqual([EID]);
  await graceOver(w);
  expect(w.endpoints()).toEqual([]);
  expect(await w.store.all('endpoint')).toEqual([]);
  expect([...w.kernel.firewall.ports.values()]).toEqual([]);
  // The gateway and the aux address stay: the network lives.
  expect(w.addresses()).toEqual(['172.28.5.1', '172.28.5.254']);
  // The address and the host port are free again for a new container.
  await w.ipam.requestAddress({ poolId: w.poolId, address: '172.28.5.10', options: {} });
  await w.driver.createEndpoint({ networkId: NID, endpointId: EID2, iface: { address: '172.28.5.10/16' }, options: {} });
  await w.driver.programExternalConnectivity({ networkId: NID, endpointId: EID2, portBindings: [PORT] });
  expect([...w.kernel.firewall.ports.values()].map((p) => p.hostPort)).toEqual([PORT.hostPort]);
});

test('a network Docker forgot goes with its pool and every address', async () => {
  const w = await world();
  // A second network (Docker's IPAM) that Docker still has: evidence this is the dockerd using tsnet.
  await w.driver.createNetwork({ networkId: NID2, driverOptions: {}, enableIPv6: false, internal: false, ipv4: [{ addressSpace: 'LocalDefault', pool: '10.77.0.0/24', gateway: '10.77.0.1/24', auxAddresses: {} }], ipv6: [] });
  w.docker.addNetwork({ id: NID2, name: 'n2', driver: NAME, internal: false, ipamDriver: 'default', ipamConfig: [{ Subnet: '10.77.0.0/24', Gateway: '10.77.0.1' }] });
  w.docker.networks.delete(NID);
  await lookOnce(w);
  await graceOver(w);
  expect(w.driver.state().networks.map((n) => n.id)).toEqual([NID2]);
  expect(w.ipam.allocations()).toEqual({ pools: [], addresses: [] });
  expect([...w.kernel.firewall.ports.values()]).toEqual([]);
});

test('Docker API down: nothing is decided, nothing removed', async () => {
  const w = await world();
  forgetContainer(w);
  await w.docker.stop();
  w.feed.up();
  await w.reclaim.idle();
  expect(w.timers.delays).toEqual([]);
  expect(w.endpoints()).toEqual([EID]);
});

test('one failing inspect (a partial read) decides nothing', async () => {
  const w = await world();
  forgetContainer(w);
  w.docker.failing.add(`/networks/${NID}`);
  w.feed.up();
  await until(() => w.docker.requests.some((r) => r.endsWith(`/networks/${NID}`)), 'inspect tried');
  await w.reclaim.idle();
  expect(w.timers.delays).toEqual([]);
  expect(w.endpoints()).toEqual([EID]);
});

test.each<[string, (w: World, saved: FakeNetwork['endpoints']) => void]>([
  ['the second look fails (a partial read)', (w) => w.docker.failing.add('/info')],
  ['Docker API goes down (missing all along is not known)', (w) => w.feed.down()],
  ['the endpoint is back in Docker', (w, saved) => (w.net.endpoints = saved)],
])('during the grace %s: nothing removed', async (_what, during) => {
  const w = await world();
  const saved = w.net.endpoints;
  forgetContainer(w);
  await lookOnce(w);
  during(w, saved);
  await graceOver(w);
  expect(w.endpoints()).toEqual([EID]);
  expect(w.addresses()).toContain('172.28.5.10');
});

test('race: an address allocated between the two looks is kept, as is one released and allocated again', async () => {
  const w = await world();
  forgetContainer(w);
  await lookOnce(w);
  // dockerd starts containers while tsnet waits: it has the addresses before Docker's API shows their endpoints.
  await w.ipam.requestAddress({ poolId: w.poolId, address: '172.28.5.20', options: {} });
  await w.ipam.releaseAddress(w.poolId, '172.28.5.10');
  await w.ipam.requestAddress({ poolId: w.poolId, address: '172.28.5.10', options: {} });
  w.timers.fire();
  // The second look names them (new allocations): they start the next round instead of going.
  await until(() => w.timers.waiting, 'next round');
  expect(w.endpoints()).toEqual([]);
  expect(w.addresses()).toEqual(['172.28.5.1', '172.28.5.10', '172.28.5.20', '172.28.5.254']);
  // Docker shows one by then; the other stays missing a whole grace and goes.
  w.net.endpoints = { [CID]: { EndpointID: 'e'.repeat(64), IPv4Address: '172.28.5.20/16' } };
  await graceOver(w);
  expect(w.addresses()).toEqual(['172.28.5.1', '172.28.5.20', '172.28.5.254']);
});

test('another dockerd (knows none of tsnet networks, never seen): an error, nothing removed', async () => {
  const w = await world();
  w.docker.networks.clear();
  w.docker.daemonId = 'OTHER:DAEMON';
  w.feed.up();
  await until(() => w.docker.requests.some((r) => r.endsWith(`/networks/${NID}`)), 'network inspected');
  await w.reclaim.idle();
  expect(w.timers.delays).toEqual([]);
  expect(w.driver.state().networks.map((n) => n.id)).toEqual([NID]);
  expect(w.addresses()).toHaveLength(3);
});

test('the daemon that knew tsnet networks before is trusted after its last tsnet network went', async () => {
  const w = await world();
  w.feed.up();
  await until(() => w.docker.requests.some((r) => r.endsWith(`/networks/${NID}`)), 'first pass');
  await w.reclaim.idle();
  // `docker network rm` while tsnet was away: dockerd gave up on the plugin and dropped the network.
  w.docker.networks.clear();
  w.feed.down();
  await lookOnce(w);
  await graceOver(w);
  expect(w.driver.state().networks).toEqual([]);
  expect(w.ipam.allocations().pools).toEqual([]);
});

test('a create cut off by a crash: the network Docker never had goes once Docker shows a tsnet network, not only at the next start', async () => {
  const w = await world();
  // tsnet committed NID, then died before answering: dockerd never had it, and this daemon was never seen before.
  w.docker.networks.clear();
  w.feed.up();
  await until(() => w.docker.requests.some((r) => r.endsWith('/networks')), 'first pass');
  await w.reclaim.idle();
  expect(w.timers.delays).toEqual([]);
  expect(w.driver.state().networks.map((n) => n.id)).toEqual([NID]);
  // The retried `docker network create` succeeds under a new id: Docker now knows a tsnet network.
  await w.driver.createNetwork({ networkId: NID2, driverOptions: {}, enableIPv6: false, internal: false, ipv4: [{ addressSpace: 'LocalDefault', pool: '10.77.0.0/24', gateway: '10.77.0.1/24', auxAddresses: {} }], ipv6: [] });
  w.docker.addNetwork({ id: NID2, name: 'n2', driver: NAME, internal: false, ipamDriver: 'default', ipamConfig: [{ Subnet: '10.77.0.0/24', Gateway: '10.77.0.1' }] });
  w.feed.networksChanged();
  await until(() => w.timers.waiting, 'a pass waiting out the grace');
  await graceOver(w);
  expect(w.driver.state().networks.map((n) => n.id)).toEqual([NID2]);
  expect(w.ipam.allocations()).toEqual({ pools: [], addresses: [] });
});

test('stop during the grace: nothing removed, the pass ends', async () => {
  const w = await world();
  forgetContainer(w);
  await lookOnce(w);
  await w.reclaim.stop();
  expect(w.endpoints()).toEqual([EID]);
});

test('IPAM forget applies only to the allocation looked at: a pool whose references changed, an address allocated again', async () => {
  const store = new SqliteStore(':memory:');
  const ipam = await TsnetIpam.load(store, { defaultPoolsV4: [], defaultPoolsV6: [], hostRoutes: async () => [] });
  const req = { addressSpace: '', pool: '10.61.0.0/24', subPool: '', options: {}, v6: false };
  const { poolId } = await ipam.requestPool(req);
  await ipam.requestAddress({ poolId, address: '10.61.0.7', options: {} });
  const seen = ipam.allocations();
  const poolToken = seen.pools[0].token;
  const addrToken = seen.addresses[0].token;
  await ipam.releaseAddress(poolId, '10.61.0.7');
  await ipam.requestAddress({ poolId, address: '10.61.0.7', options: {} });
  expect(await ipam.forgetAddress(poolId, '10.61.0.7', addrToken)).toBe(false);
  await ipam.requestPool(req);
  expect(await ipam.forgetPool(poolId, poolToken)).toBe(false);
  expect(ipam.allocations().addresses.map((a) => a.address)).toEqual(['10.61.0.7']);
  const now = ipam.allocations();
  expect(await ipam.forgetAddress(poolId, '10.61.0.7', now.addresses[0].token)).toBe(true);
  expect(await ipam.forgetPool(poolId, now.pools[0].token)).toBe(true);
  // Every reference goes with a forgotten pool, in the store too.
  expect(ipam.allocations()).toEqual({ pools: [], addresses: [] });
  expect(await store.all('pool')).toEqual([]);
  expect(await store.all('address')).toEqual([]);
});

test('trust outlives a restart: a new Reclaim on the same store trusts the daemon an earlier one trusted', async () => {
  const w = await world();
  w.feed.up();
  await until(() => w.docker.requests.some((r) => r.endsWith(`/networks/${NID}`)), 'first pass');
  await w.reclaim.idle();
  expect((await w.store.all('trust')).map((t) => t.evidence)).toEqual(['network']);
  await w.reclaim.stop();
  // A crash left tsnet with a network dockerd never learnt of, and nothing else Docker knows.
  w.docker.networks.clear();
  const feed = new StatusFeed();
  const again = await Reclaim.load({ driverName: NAME, dockerSocket: w.docker.socketPath, graceMs: GRACE, feed, driver: w.driver, ipam: w.ipam, store: w.store, timers: w.timers });
  worlds.push({ docker: w.docker, reclaim: again, driver: w.driver });
  feed.up();
  await until(() => w.timers.waiting, 'the grace timer');
  await graceOver({ ...w, reclaim: again });
  expect(w.driver.state().networks).toEqual([]);
  expect(w.ipam.allocations().pools).toEqual([]);
});

describe('first-use trust promised at a start that held nothing', () => {
  /** A restart after a crash during the first create: tsnet holds a network this daemon (never read) does not have. */
  async function restarted(w: World, promise: boolean) {
    await w.store.commit([del('trust', 'docker')]);
    await promiseFirstUse(w.store, promise);
    w.docker.networks.clear();
    const feed = new StatusFeed();
    const again = await Reclaim.load({ driverName: NAME, dockerSocket: w.docker.socketPath, graceMs: GRACE, feed, driver: w.driver, ipam: w.ipam, store: w.store, timers: w.timers });
    worlds.push({ docker: w.docker, reclaim: again, driver: w.driver });
    feed.up();
    return again;
  }

  test('survives the crash: the first daemon read is trusted and what it never had goes', async () => {
    const w = await world();
    const again = await restarted(w, true);
    await until(() => w.timers.waiting, 'the grace timer');
    await graceOver({ ...w, reclaim: again });
    expect(w.driver.state().networks).toEqual([]);
    expect(w.ipam.allocations().pools).toEqual([]);
    expect((await w.store.all('trust')).map((t) => [t.evidence, t.daemonId !== ''])).toEqual([['first-use', true]]);
  });

  test('not promised (the start held something): the same restart removes nothing', async () => {
    const w = await world();
    const again = await restarted(w, false);
    await until(() => w.docker.requests.some((r) => r.endsWith(`/networks/${NID}`)), 'network inspected');
    await again.idle();
    expect(w.timers.delays).toEqual([]);
    expect(w.driver.state().networks.map((n) => n.id)).toEqual([NID]);
    expect(await w.store.all('trust')).toEqual([]);
  });
});
