import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { TsnetDriver } from '../../src/driver/driver';
import { describeChain, TsnetError } from '../../src/errors';
import { GATEWAY_ADDRESS_TYPE, GLOBAL_ADDRESS_SPACE, LOCAL_ADDRESS_SPACE, REQUEST_ADDRESS_TYPE } from '../../src/ipam/contract';
import { TsnetIpam, type TsnetIpamOptions } from '../../src/ipam/driver';
import type { LinkInfo } from '../../src/kernel/contract';
import { FakeFirewall, FakeKernel } from '../../src/kernel/fake';
import { KeyedMutex } from '../../src/mutex';
import { SqliteStore } from '../../src/store/sqlite';
import { addNic } from './child-fixtures';
import { copyStore, dockerMac, Holdings, type Point, rangesOverlap, ScheduledKernel, ScheduledStore, v4Range, type V4Range, v4Text } from './model-fixtures';

/**
 * A model-based test of the network driver and the IPAM together, the way dockerd drives them: flows of calls
 * (RequestPool → RequestAddress(gateway) → CreateNetwork, RequestAddress → CreateEndpoint → Join →
 * ProgramExternalConnectivity, and back), one actor per network, endpoint, pool and address slot. dockerd never
 * sends two calls for one endpoint at once, so each actor's calls run in order; different actors' run concurrently,
 * and fast-check's scheduler picks the interleaving at every store commit and kernel call.
 *
 * Checked: every reply against the model (strictly for what was granted: an address or a pool nobody else holds;
 * refusals only when the model or a call in flight explains them); at every scheduling point no two endpoints
 * share an address, no endpoint holds an address the store says is free, no two stored pools overlap in an address
 * space; when quiet, the store matches the model and the fake kernel's links, addresses, routes and firewall
 * elements match the records exactly; at the end a driver and IPAM loaded from a copy of the store and reconciled
 * change nothing and answer as the model says.
 *
 * TSNET_MODEL_RUNS (default 150) and TSNET_MODEL_SEED (default fixed) widen the search.
 */

const RUNS = Number(process.env.TSNET_MODEL_RUNS ?? 150);
const SEED = Number(process.env.TSNET_MODEL_SEED ?? 20260506);

const NETS = 2;
const EPS = 3;
const POOLS = 2;
const ADDRS = 3;
/** Explicit pools, small so addresses run out: overlapping each other and one default block. */
const EXPLICIT = ['10.99.0.0/28', '10.99.0.0/27', '10.99.0.16/28', '10.98.0.0/28', '10.200.0.16/28'];
const SUBPOOL: Record<string, string> = { '10.99.0.0/28': '10.99.0.8/29', '10.98.0.0/28': '10.98.0.0/29' };
/** Four default /28 blocks. */
const DEFAULT_BASE = '10.200.0.0/26';
const DEFAULT_SIZE = 28;
const HOST_PORTS = [4000, 4001];
const PARENTS = ['eth1', 'eth1.100'];

type Code = string;
const codeOf = (err: unknown): Code => (err instanceof TsnetError ? err.code : `not a TsnetError: ${describeChain(err)}`);

interface ModelPool {
  id: string;
  space: string;
  cidr: string;
  range: V4Range;
  sub?: string;
  dynamic: boolean;
  refs: number;
  /** Releases sent and not answered yet. */
  releasing: number;
}

interface ModelNet {
  id: string;
  mode: 'bridge' | 'macvlan';
  pool: ModelPool;
  gateway: string;
  parent?: string;
  icc: boolean;
  shim?: { poolId: string; address: string };
}

interface ModelEp {
  id: string;
  address: string;
  joined: boolean;
  port?: number;
}

interface NetSpec {
  mode: 'bridge' | 'macvlan';
  /** Index into EXPLICIT, or -1 for a default pool. */
  pool: number;
  parent: number;
  shim: boolean;
  icc: boolean;
}

interface PoolSpec {
  global: boolean;
  pool: number;
  sub: boolean;
}

const poolKey = (space: string, cidr: string, sub: string | undefined) => `${space} ${cidr} ${sub ?? ''}`;
const addrKey = (poolId: string, address: string) => `${poolId}|${address}`;
const capacityOf = (p: ModelPool) => dynamicAddresses(p).length;

/** The addresses dynamic allocation may hand out: the ip-range, or the pool, without network and broadcast. */
function dynamicAddresses(p: ModelPool): string[] {
  const r = p.sub ? v4Range(p.sub) : p.range;
  const out: string[] = [];
  for (let n = Math.max(r.lo, p.range.lo + 1); n <= Math.min(r.hi, p.range.hi - 1); n++) out.push(v4Text(n));
  return out;
}

/** Everything one run owns: the system under test on the scheduled store and kernel, the model, the actors. */
class World {
  readonly violations: string[] = [];
  private readonly chains = new Map<string, Promise<void>>();
  private readonly flows: Array<Promise<void>> = [];
  private ids = 0;

  // The model.
  private readonly pools = new Map<string, ModelPool>();
  private readonly addresses = new Holdings();
  private readonly ports = new Holdings();
  private readonly nets = new Map<number, ModelNet>();
  private readonly eps = new Map<string, ModelEp>();
  private readonly poolSlots = new Map<number, ModelPool>();
  private readonly addrSlots = new Map<string, string>();
  /** Requests in flight, to judge refusals: explicit pools and addresses by key, dynamic ones per pool. */
  private readonly pendingPools = new Map<string, number>();
  private pendingDefault = 0;
  private readonly pendingAddresses = new Map<string, number>();
  private readonly pendingDynamic = new Map<string, number>();
  private readonly pendingPorts = new Map<number, number>();
  private readonly creating = new Set<{ parent: string | undefined; range: V4Range }>();
  /** The links dockerd moved into sandboxes at Join (out of the host namespace), by endpoint id. */
  private readonly sandboxes = new Map<string, LinkInfo>();
  /** dockerd sends one pool's RequestPool and ReleasePool one after the other (see ipamCall). */
  private readonly poolLocks = new KeyedMutex();

  private constructor(
    readonly s: fc.Scheduler,
    readonly inner: SqliteStore,
    readonly fake: FakeKernel,
    readonly ipam: TsnetIpam,
    readonly driver: TsnetDriver,
  ) {}

  static async create(s: fc.Scheduler): Promise<World> {
    const inner = new SqliteStore(':memory:');
    const fake = new FakeKernel();
    addNic(fake, 'eth1');
    // Filled in below: the point needs the world for its checks.
    const made: { world?: World } = {};
    const point: Point = async (label) => {
      if (made.world) await made.world.checkAlways(label);
      await s.schedule(Promise.resolve(), label);
    };
    const store = new ScheduledStore(inner, point);
    const kernel = new ScheduledKernel(fake, point);
    const ipam = await TsnetIpam.load(store, ipamOptions(kernel));
    const driver = await TsnetDriver.load(store, kernel, ipam.hostAddresses);
    made.world = new World(s, inner, fake, ipam, driver);
    return made.world;
  }

  private fresh(kind: string): string {
    return createHash('sha256').update(`${kind}-${++this.ids}`).digest('hex');
  }

  private violation(what: string): void {
    this.violations.push(what);
  }

  /** Starts `flow` after the actors `keys` (its own) and `after` have finished what they were sent before. */
  launch(keys: string[], after: string[], flow: () => Promise<void>): void {
    const deps = [...keys, ...after].map((k) => this.chains.get(k) ?? Promise.resolve());
    const p = Promise.all(deps)
      .then(flow)
      .catch((err: unknown) => this.violation(`flow failed: ${describeChain(err)}`));
    for (const k of keys) this.chains.set(k, p);
    this.flows.push(p);
  }

  private chainsOf(prefix: string): string[] {
    return [...this.chains.keys()].filter((k) => k.startsWith(prefix));
  }

  assertClean(): void {
    if (this.violations.length > 0) throw new Error(`model violated:\n${this.violations.join('\n')}`);
  }

  // ---- IPAM calls, checked against the model ----

  private count(m: Map<string, number>, key: string, delta: number): void {
    m.set(key, (m.get(key) ?? 0) + delta);
  }

  /** Live as far as replies go: some reference is not being released. */
  private live(p: ModelPool): boolean {
    return p.refs - p.releasing > 0;
  }

  async requestPool(space: string, cidr: string | undefined, sub: string | undefined): Promise<ModelPool | undefined> {
    if (cidr === undefined) return this.requestDefaultPool(space);
    const key = poolKey(space, cidr, sub);
    return this.poolLocks.run(key, async () => {
      this.count(this.pendingPools, key, 1);
      try {
        const got = await this.ipam.requestPool({ addressSpace: space, pool: cidr, subPool: sub ?? '', options: {}, v6: false });
        if (got.pool !== cidr) this.violation(`RequestPool ${cidr} answered pool ${got.pool}`);
        const same = [...this.pools.values()].find((p) => p.space === space && p.cidr === cidr && p.sub === sub && !p.dynamic && this.live(p));
        if (same) {
          if (got.poolId !== same.id) this.violation(`RequestPool ${key}: identical request got PoolID ${got.poolId}, not the shared ${same.id}`);
          same.refs++;
          return same;
        }
        return this.addPool(got.poolId, space, cidr, sub, false);
      } catch (err) {
        const range = v4Range(cidr);
        const clash =
          [...this.pools.values()].some((p) => p.space === space && rangesOverlap(p.range, range)) ||
          [...this.pendingPools].some(([k, n]) => n > 0 && k !== key && k.startsWith(`${space} `) && rangesOverlap(v4Range(k.split(' ')[1]), range)) ||
          (this.pendingDefault > 0 && rangesOverlap(v4Range(DEFAULT_BASE), range));
        if (codeOf(err) !== 'TSN_POOL_OVERLAP' || !clash) this.violation(`RequestPool ${key} refused (${codeOf(err)}) with nothing in the way: ${describeChain(err)}`);
        return undefined;
      } finally {
        this.count(this.pendingPools, key, -1);
      }
    });
  }

  private async requestDefaultPool(space: string): Promise<ModelPool | undefined> {
    this.pendingDefault++;
    try {
      const got = await this.ipam.requestPool({ addressSpace: space, pool: '', subPool: '', options: {}, v6: false });
      const range = v4Range(got.pool);
      const base = v4Range(DEFAULT_BASE);
      if (range.prefix !== DEFAULT_SIZE || range.lo < base.lo || range.hi > base.hi || got.pool !== `${v4Text(range.lo)}/${DEFAULT_SIZE}`) {
        this.violation(`default pool ${got.pool} is not a /${DEFAULT_SIZE} block of ${DEFAULT_BASE}`);
      }
      return this.addPool(got.poolId, space, got.pool, undefined, true);
    } catch (err) {
      const base = v4Range(DEFAULT_BASE);
      const blocks = (base.hi - base.lo + 1) / 2 ** (32 - DEFAULT_SIZE);
      const taken = new Set<number>();
      const explicitPending = [...this.pendingPools].filter(([, n]) => n > 0).map(([k]) => v4Range(k.split(' ')[1]));
      for (let b = 0; b < blocks; b++) {
        const block = { lo: base.lo + b * 16, hi: base.lo + b * 16 + 15, prefix: DEFAULT_SIZE };
        if ([...this.pools.values()].some((p) => rangesOverlap(p.range, block)) || explicitPending.some((r) => rangesOverlap(r, block))) taken.add(b);
      }
      if (codeOf(err) !== 'TSN_NO_AVAILABLE_POOL' || taken.size + this.pendingDefault - 1 < blocks) {
        this.violation(`default RequestPool refused (${codeOf(err)}) with ${blocks - taken.size} block(s) free: ${describeChain(err)}`);
      }
      return undefined;
    } finally {
      this.pendingDefault--;
    }
  }

  /** A pool the IPAM newly granted: it may overlap no live pool (in its space; default ones in any). */
  private addPool(id: string, space: string, cidr: string, sub: string | undefined, dynamic: boolean): ModelPool {
    const range = v4Range(cidr);
    for (const p of this.pools.values()) {
      if (!this.live(p) || !rangesOverlap(p.range, range)) continue;
      if (p.space === space || dynamic) this.violation(`pool ${cidr} (${space}) granted while pool ${p.cidr} (${p.space}) is held`);
    }
    const old = this.pools.get(id);
    if (old && this.live(old)) this.violation(`PoolID ${id} granted again while held`);
    const pool: ModelPool = { id, space, cidr, range, ...(sub ? { sub } : {}), dynamic, refs: 1, releasing: 0 };
    // The old entry's late release reply must not touch the new pool (see releasePool).
    this.pools.set(id, pool);
    if (old) this.addresses.drop(`${id}|`);
    return pool;
  }

  async releasePool(pool: ModelPool): Promise<void> {
    const run = async () => {
      pool.releasing++;
      await this.ipam.releasePool(pool.id).catch((err: unknown) => this.violation(`ReleasePool ${pool.id} failed: ${describeChain(err)}`));
      pool.releasing--;
      pool.refs--;
      if (pool.refs === 0 && this.pools.get(pool.id) === pool) {
        this.pools.delete(pool.id);
        this.addresses.drop(`${pool.id}|`);
      }
    };
    return pool.dynamic ? run() : this.poolLocks.run(poolKey(pool.space, pool.cidr, pool.sub), run);
  }

  async requestAddress(pool: ModelPool, address: string | undefined, gateway = false): Promise<string | undefined> {
    const options: Record<string, string> = gateway ? { [REQUEST_ADDRESS_TYPE]: GATEWAY_ADDRESS_TYPE } : {};
    const pending = address === undefined ? this.pendingDynamic : this.pendingAddresses;
    const pkey = address === undefined ? pool.id : addrKey(pool.id, address);
    this.count(pending, pkey, 1);
    try {
      const got = await this.ipam.requestAddress({ poolId: pool.id, address: address ?? '', options });
      const [plain, len] = got.address.split('/');
      if (Number(len) !== pool.range.prefix) this.violation(`address ${got.address} of pool ${pool.cidr} has the wrong prefix length`);
      if (address !== undefined && plain !== address) this.violation(`RequestAddress ${address} answered ${plain}`);
      if (address === undefined && !dynamicAddresses(pool).includes(plain)) this.violation(`dynamic address ${plain} outside the range of ${pool.cidr} ${pool.sub ?? ''}`);
      const bad = this.addresses.grant(addrKey(pool.id, plain), 'address');
      if (bad) this.violation(bad);
      return plain;
    } catch (err) {
      const code = codeOf(err);
      if (address !== undefined) {
        // A dynamic request in flight (a shim's too) may have taken it.
        const explained = this.addresses.has(pkey) || (this.pendingAddresses.get(pkey) ?? 0) > 1 || (this.pendingDynamic.get(pool.id) ?? 0) > 0;
        if (code !== 'TSN_ADDRESS_IN_USE' || !explained) this.violation(`RequestAddress ${pkey} refused (${code}) though free: ${describeChain(err)}`);
      } else {
        const inRange = dynamicAddresses(pool).filter((a) => this.addresses.has(addrKey(pool.id, a))).length;
        const inFlight = (this.pendingDynamic.get(pool.id) ?? 0) - 1 + [...this.pendingAddresses].filter(([k, n]) => n > 0 && k.startsWith(`${pool.id}|`)).length;
        if (code !== 'TSN_NO_AVAILABLE_IPS' || inRange + inFlight < capacityOf(pool)) {
          this.violation(`RequestAddress in ${pool.cidr} refused (${code}) with ${capacityOf(pool) - inRange} free: ${describeChain(err)}`);
        }
      }
      return undefined;
    } finally {
      this.count(pending, pkey, -1);
    }
  }

  async releaseAddress(pool: ModelPool, address: string): Promise<void> {
    const key = addrKey(pool.id, address);
    const token = this.addresses.releasing(key);
    await this.ipam.releaseAddress(pool.id, address).catch((err: unknown) => this.violation(`ReleaseAddress ${key} failed: ${describeChain(err)}`));
    this.addresses.released(key, token);
  }

  // ---- dockerd's flows ----

  createNetwork(slot: number, spec: NetSpec): void {
    this.launch([`net:${slot}`], [], async () => {
      if (this.nets.has(slot)) return;
      const pool = await this.requestPool(LOCAL_ADDRESS_SPACE, spec.pool < 0 ? undefined : EXPLICIT[spec.pool], undefined);
      if (!pool) return;
      const gateway = await this.requestAddress(pool, undefined, true);
      if (gateway === undefined) return this.releasePool(pool);
      const id = this.fresh('net');
      const parent = PARENTS[spec.parent];
      const driverOptions: Record<string, string> =
        spec.mode === 'bridge'
          ? spec.icc
            ? {}
            : { 'com.docker.network.bridge.enable_icc': 'false' }
          : { mode: 'macvlan', parent, ...(spec.shim ? { 'tsnet.host_shim': 'true' } : {}) };
      // The shim's address is reserved inside CreateNetwork: it counts as in flight for refusals meanwhile.
      const shim = spec.mode === 'macvlan' && spec.shim;
      if (shim) this.count(this.pendingDynamic, pool.id, 1);
      const creating = { parent: spec.mode === 'macvlan' ? parent : undefined, range: pool.range };
      this.creating.add(creating);
      try {
        await this.driver.createNetwork({
          networkId: id,
          driverOptions,
          enableIPv6: false,
          internal: false,
          ipv4: [{ addressSpace: LOCAL_ADDRESS_SPACE, pool: pool.cidr, gateway: `${gateway}/${pool.range.prefix}`, auxAddresses: {} }],
          ipv6: [],
        });
      } catch (err) {
        // Identical pools are shared, but one parent's networks may not overlap: either of two such creates may win.
        const rival = (o: { parent?: string; range: V4Range }) => o !== creating && o.parent === parent && rangesOverlap(o.range, pool.range);
        const explained = spec.mode === 'macvlan' && ([...this.nets.values()].some((n) => rival({ parent: n.parent, range: n.pool.range })) || [...this.creating].some(rival));
        if (codeOf(err) !== 'TSN_INVALID_OPTION' || !explained) this.violation(`CreateNetwork ${spec.mode} on ${pool.cidr} refused: ${describeChain(err)}`);
        await this.releaseAddress(pool, gateway);
        await this.releasePool(pool);
        return;
      } finally {
        if (shim) this.count(this.pendingDynamic, pool.id, -1);
        this.creating.delete(creating);
      }
      const net: ModelNet = { id, mode: spec.mode, pool, gateway, icc: spec.icc || spec.mode !== 'bridge', ...(spec.mode === 'macvlan' ? { parent } : {}) };
      const rec = this.driver.state().networks.find((n) => n.id === id);
      if (shim) {
        const reserved = rec?.mode === 'macvlan' ? rec.shim?.reserved[0] : undefined;
        if (!reserved) this.violation(`macvlan network ${id.slice(0, 8)} has no shim address reserved`);
        else {
          const bad = this.addresses.grant(addrKey(reserved.poolId, reserved.address), 'shim address');
          if (bad) this.violation(bad);
          net.shim = reserved;
        }
      }
      this.nets.set(slot, net);
    });
  }

  deleteNetwork(slot: number): void {
    this.launch([`net:${slot}`], this.chainsOf(`ep:${slot}:`), async () => {
      const net = this.nets.get(slot);
      // dockerd refuses to remove a network that has endpoints.
      if (!net || [...this.eps.keys()].some((k) => k.startsWith(`${slot}:`))) return;
      const token = net.shim ? this.addresses.releasing(addrKey(net.shim.poolId, net.shim.address)) : -1;
      await this.driver.deleteNetwork(net.id).catch((err: unknown) => this.violation(`DeleteNetwork failed: ${describeChain(err)}`));
      if (net.shim) this.addresses.released(addrKey(net.shim.poolId, net.shim.address), token);
      this.nets.delete(slot);
      await this.releaseAddress(net.pool, net.gateway);
      await this.releasePool(net.pool);
    });
  }

  private onEndpoint(slot: number, e: number, flow: (net: ModelNet, key: string) => Promise<void>): void {
    this.launch([`ep:${slot}:${e}`], [`net:${slot}`], async () => {
      const net = this.nets.get(slot);
      if (net) await flow(net, `${slot}:${e}`);
    });
  }

  createEndpoint(slot: number, e: number, explicit: number | undefined): void {
    this.onEndpoint(slot, e, async (net, key) => {
      if (this.eps.has(key)) return;
      const address = await this.requestAddress(net.pool, explicit === undefined ? undefined : v4Text(net.pool.range.lo + explicit));
      if (address === undefined) return;
      const id = this.fresh('ep');
      try {
        const reply = await this.driver.createEndpoint({ networkId: net.id, endpointId: id, iface: { address: `${address}/${net.pool.range.prefix}` }, options: {} });
        if (reply.macAddress !== dockerMac(address) || reply.address !== undefined) this.violation(`CreateEndpoint ${address} answered ${JSON.stringify(reply)}`);
      } catch (err) {
        this.violation(`CreateEndpoint ${address} on ${net.mode} refused: ${describeChain(err)}`);
        return this.releaseAddress(net.pool, address);
      }
      this.eps.set(key, { id, address, joined: false });
    });
  }

  join(slot: number, e: number, port: number | undefined): void {
    this.onEndpoint(slot, e, async (net, key) => {
      const ep = this.eps.get(key);
      if (!ep || ep.joined) return;
      try {
        const reply = await this.driver.join({ networkId: net.id, endpointId: ep.id, sandboxKey: `/var/run/docker/netns/m${key}`, options: {} });
        const link = this.fake.linkMap.get(reply.srcName);
        const linkOk = net.mode === 'bridge' ? link?.kind === 'veth' : link?.kind === 'macvlan' && link.lower === net.parent && link.mac === dockerMac(ep.address);
        if (!linkOk || reply.gateway !== net.gateway || reply.disableGatewayService) this.violation(`Join answered ${JSON.stringify(reply)} (link ${JSON.stringify(link)})`);
        // dockerd moves the link into the sandbox: it leaves the host namespace until Leave.
        if (link) {
          this.sandboxes.set(ep.id, link);
          this.fake.linkMap.delete(reply.srcName);
        }
      } catch (err) {
        this.violation(`Join refused: ${describeChain(err)}`);
        return;
      }
      ep.joined = true;
      await this.publish(net, ep, port);
    });
  }

  /** ProgramExternalConnectivity with one SCTP binding (no socket is bound for SCTP: nothing on the host). */
  private async publish(net: ModelNet, ep: ModelEp, port: number | undefined): Promise<void> {
    const bindings = port === undefined ? [] : [{ proto: 'sctp' as const, port: 80, hostPort: port, hostPortEnd: port }];
    const pkey = String(port);
    if (port !== undefined) this.pendingPorts.set(port, (this.pendingPorts.get(port) ?? 0) + 1);
    try {
      await this.driver.programExternalConnectivity({ networkId: net.id, endpointId: ep.id, portBindings: bindings });
      if (port === undefined || net.mode !== 'bridge') return;
      const bad = this.ports.grant(pkey, 'host port');
      if (bad) this.violation(bad);
      ep.port = port;
    } catch (err) {
      const explained = port !== undefined && (this.ports.has(pkey) || (this.pendingPorts.get(port) ?? 0) > 1);
      if (codeOf(err) !== 'TSN_PORT_IN_USE' || !explained) this.violation(`ProgramExternalConnectivity ${pkey} refused (${codeOf(err)}): ${describeChain(err)}`);
    } finally {
      if (port !== undefined) this.pendingPorts.set(port, (this.pendingPorts.get(port) ?? 0) - 1);
    }
  }

  /** dockerd's order on stop or disconnect: RevokeExternalConnectivity, then Leave. */
  private async leaveFlow(net: ModelNet, ep: ModelEp): Promise<void> {
    const pkey = String(ep.port);
    const token = ep.port !== undefined ? this.ports.releasing(pkey) : -1;
    await this.driver.revokeExternalConnectivity(net.id, ep.id).catch((err: unknown) => this.violation(`Revoke failed: ${describeChain(err)}`));
    if (ep.port !== undefined) this.ports.released(pkey, token);
    delete ep.port;
    // The sandbox gives the link back to the host namespace under its own name.
    const link = this.sandboxes.get(ep.id);
    if (link) {
      this.sandboxes.delete(ep.id);
      this.fake.linkMap.set(link.name, link);
    }
    await this.driver.leave(net.id, ep.id).catch((err: unknown) => this.violation(`Leave failed: ${describeChain(err)}`));
    ep.joined = false;
  }

  leave(slot: number, e: number): void {
    this.onEndpoint(slot, e, async (net, key) => {
      const ep = this.eps.get(key);
      if (ep?.joined) await this.leaveFlow(net, ep);
    });
  }

  deleteEndpoint(slot: number, e: number): void {
    this.onEndpoint(slot, e, async (net, key) => {
      const ep = this.eps.get(key);
      if (!ep) return;
      if (ep.joined) await this.leaveFlow(net, ep);
      await this.driver.deleteEndpoint(net.id, ep.id).catch((err: unknown) => this.violation(`DeleteEndpoint failed: ${describeChain(err)}`));
      this.eps.delete(key);
      await this.releaseAddress(net.pool, ep.address);
    });
  }

  // ---- IPAM alone (a network of another driver on tsnet's IPAM) ----

  requestPoolSlot(p: number, spec: PoolSpec): void {
    this.launch([`pool:${p}`], this.chainsOf(`addr:${p}:`), async () => {
      if (this.poolSlots.has(p)) return;
      const cidr = spec.pool < 0 ? undefined : EXPLICIT[spec.pool];
      const sub = spec.sub && cidr !== undefined ? SUBPOOL[cidr] : undefined;
      const pool = await this.requestPool(spec.global ? GLOBAL_ADDRESS_SPACE : LOCAL_ADDRESS_SPACE, cidr, sub);
      if (pool) this.poolSlots.set(p, pool);
    });
  }

  releasePoolSlot(p: number): void {
    this.launch([`pool:${p}`], this.chainsOf(`addr:${p}:`), async () => {
      const pool = this.poolSlots.get(p);
      if (!pool) return;
      for (let a = 0; a < ADDRS; a++) {
        const address = this.addrSlots.get(`${p}:${a}`);
        if (address === undefined) continue;
        this.addrSlots.delete(`${p}:${a}`);
        await this.releaseAddress(pool, address);
      }
      this.poolSlots.delete(p);
      await this.releasePool(pool);
    });
  }

  requestAddressSlot(p: number, a: number, explicit: number | undefined): void {
    this.launch([`addr:${p}:${a}`], [`pool:${p}`], async () => {
      const pool = this.poolSlots.get(p);
      if (!pool || this.addrSlots.has(`${p}:${a}`)) return;
      const address = await this.requestAddress(pool, explicit === undefined ? undefined : v4Text(pool.range.lo + explicit));
      if (address !== undefined) this.addrSlots.set(`${p}:${a}`, address);
    });
  }

  releaseAddressSlot(p: number, a: number): void {
    this.launch([`addr:${p}:${a}`], [`pool:${p}`], async () => {
      const pool = this.poolSlots.get(p);
      const address = this.addrSlots.get(`${p}:${a}`);
      if (!pool || address === undefined) return;
      this.addrSlots.delete(`${p}:${a}`);
      await this.releaseAddress(pool, address);
    });
  }

  stats(): string {
    return `nets=${this.nets.size} eps=${this.eps.size} pools=${this.pools.size} addrs=${this.addresses.keys().length} tasks=${this.s.report().length} ids=${this.ids}`;
  }

  // ---- invariants ----

  /** At every scheduling point: what no interleaving may ever show, in memory or on disk. */
  async checkAlways(at: string): Promise<void> {
    const eps = this.driver.state().endpoints;
    const seen = new Map<string, string>();
    for (const e of eps) {
      if (e.address === undefined) continue;
      const other = seen.get(e.address);
      if (other) this.violation(`at ${at}: endpoints ${other.slice(0, 8)} and ${e.id.slice(0, 8)} share ${e.address}`);
      seen.set(e.address, e.id);
    }
    const stored = await this.inner.all('pool');
    for (let i = 0; i < stored.length; i++) {
      for (let j = i + 1; j < stored.length; j++) {
        const [a, b] = [stored[i], stored[j]];
        if (a.addressSpace === b.addressSpace && rangesOverlap(v4Range(a.pool), v4Range(b.pool))) this.violation(`at ${at}: stored pools ${a.id} and ${b.id} overlap`);
      }
    }
    const held = new Set((await this.inner.all('address')).map((r) => r.address));
    for (const e of await this.inner.all('endpoint')) {
      if (e.address !== undefined && !held.has(e.address.split('/')[0])) this.violation(`at ${at}: endpoint ${e.id.slice(0, 8)} holds ${e.address}, free in the store`);
    }
  }

  /** Runs everything sent so far to the end. */
  async quiesce(): Promise<void> {
    await this.s.waitIdle();
    await this.s.waitFor(Promise.all(this.flows));
    await this.s.waitFor(this.driver.drain());
  }

  /** When nothing is in flight: the store is the model, the kernel is the records. */
  async checkQuiet(): Promise<void> {
    const storedPools = (await this.inner.all('pool')).map((p) => `${p.id} refs=${p.refs}`).sort();
    expect(storedPools).toEqual([...this.pools.values()].map((p) => `${p.id} refs=${p.refs}`).sort());
    expect((await this.inner.all('address')).map((a) => addrKey(a.poolId, a.address)).sort()).toEqual(this.addresses.keys());
    expect(await this.inner.all('tombstone')).toEqual([]);

    const nets = [...this.nets.values()];
    const eps = [...this.eps.entries()].map(([k, ep]) => ({ ep, net: this.nets.get(Number(k.split(':')[0]))! }));
    const storedNets = await this.inner.all('network');
    const storedEps = await this.inner.all('endpoint');
    expect(storedNets.map((n) => n.id).sort()).toEqual(nets.map((n) => n.id).sort());
    expect(storedEps.map((e) => `${e.id} joined=${e.sandboxKey !== undefined} ports=${(e.ports ?? []).map((p) => p.hostPort).join(',')}`).sort()).toEqual(
      eps.map(({ ep }) => `${ep.id} joined=${ep.joined} ports=${ep.port ?? ''}`).sort(),
    );
    // Memory is what is on disk.
    const state = this.driver.state();
    const byId = <T extends { id: string }>(xs: T[]) => [...xs].sort((a, b) => a.id.localeCompare(b.id));
    expect(byId(state.networks)).toEqual(byId(storedNets));
    expect(byId(state.endpoints)).toEqual(byId(storedEps));
    const parents = new Map<string, string[]>();
    for (const n of nets) if (n.parent) parents.set(n.parent, [...(parents.get(n.parent) ?? []), n.id]);
    expect((await this.inner.all('parent')).map((p) => `${p.link} owned=${p.owned} ${[...p.users].sort().join(',')}`).sort()).toEqual(
      [...parents].map(([link, users]) => `${link} owned=${link !== 'eth1'} ${users.sort().join(',')}`).sort(),
    );

    // The kernel: exactly the links, addresses, routes and firewall elements the records imply.
    const want = new Map<string, object>();
    const wantRoutes: string[] = [];
    const fwNets: string[] = [];
    const noIcc: string[] = [];
    const fwPorts: string[] = [];
    for (const rec of storedNets) {
      if (rec.mode === 'bridge') {
        const net = nets.find((n) => n.id === rec.id)!;
        want.set(rec.bridge, { kind: 'bridge', up: true, addresses: [`${net.gateway}/${net.pool.range.prefix}`] });
        fwNets.push(`${rec.bridge} icc=${net.icc}`);
      } else if (rec.mode === 'macvlan' && rec.shim) {
        want.set(rec.shim.link, { kind: 'macvlan', lower: rec.parent, up: true, addresses: rec.shim.addresses });
      }
    }
    if (parents.has('eth1.100')) want.set('eth1.100', { kind: 'vlan', lower: 'eth1', vlanId: 100, up: true, addresses: [] });
    for (const rec of storedEps) {
      const net = storedNets.find((n) => n.id === rec.networkId)!;
      if (rec.mode === 'bridge' && net.mode === 'bridge') {
        want.set(rec.hostIf, { kind: 'veth', master: net.bridge, up: true, peer: rec.containerIf });
        // Once joined, the container end is in the sandbox.
        const inHost = rec.sandboxKey ? undefined : this.fake.linkMap.get(rec.containerIf);
        const moved = rec.sandboxKey ? this.sandboxes.get(rec.id) : undefined;
        expect(inHost ?? moved).toMatchObject({ name: rec.containerIf, kind: 'veth', mac: dockerMac(rec.address!.split('/')[0]), peer: rec.hostIf });
        if (!rec.sandboxKey) want.set(rec.containerIf, { kind: 'veth' });
        if (!net.settings.enableIcc) noIcc.push(rec.hostIf);
        for (const p of rec.ports ?? []) {
          fwPorts.push(FakeFirewall.portKey(p));
          expect(p.containerIp).toBe(rec.address!.split('/')[0]);
        }
      } else if (rec.mode === 'macvlan' && net.mode === 'macvlan') {
        // Made at Join and moved into the sandbox; never in the host namespace otherwise.
        if (rec.sandboxKey) expect(this.sandboxes.get(rec.id)).toMatchObject({ name: rec.link, kind: 'macvlan', lower: net.parent, mac: dockerMac(rec.address!.split('/')[0]) });
        if (net.shim) wantRoutes.push(`${rec.address!.split('/')[0]}/32 ${net.shim.link}`);
      }
    }
    expect([...this.sandboxes.keys()].sort()).toEqual(storedEps.filter((e) => e.sandboxKey).map((e) => e.id).sort());
    const owned = [...this.fake.linkMap.values()].filter((l) => l.owner === this.fake.owner);
    expect(owned.map((l) => l.name).sort()).toEqual([...want.keys()].sort());
    for (const l of owned) expect(l).toMatchObject(want.get(l.name)!);
    expect(this.fake.linkMap.get('eth1')).toMatchObject({ up: true, addresses: [] });
    expect(this.fake.linkMap.size).toBe(owned.length + 1);
    expect(this.fake.routeTable.map((r) => `${r.dst} ${r.dev ?? ''}`).sort()).toEqual(wantRoutes.sort());
    const fw = this.fake.firewall;
    expect(fw.base).toBe(fwNets.length > 0);
    expect([...fw.networks.values()].map((n) => `${n.bridge} icc=${n.icc}`).sort()).toEqual(fwNets.sort());
    expect([...fw.ports.keys()].sort()).toEqual(fwPorts.sort());
    expect([...fw.noIccPorts].sort()).toEqual(noIcc.sort());
  }

  /** A restart on a copy of the store: reconcile changes nothing, and the IPAM loaded answers as the model says. */
  async checkReload(): Promise<void> {
    const copy = new SqliteStore(':memory:');
    await copyStore(this.inner, copy);
    const snapshot = () =>
      JSON.stringify({
        links: [...this.fake.linkMap.values()].sort((a, b) => a.name.localeCompare(b.name)),
        routes: this.fake.routeTable,
        fw: [this.fake.firewall.base, [...this.fake.firewall.networks.keys()].sort(), [...this.fake.firewall.ports.keys()].sort(), [...this.fake.firewall.noIccPorts].sort()],
      });
    const before = snapshot();
    const ipam = await TsnetIpam.load(copy, ipamOptions(this.fake));
    const driver = await TsnetDriver.load(copy, this.fake, ipam.hostAddresses);
    await driver.reconcile();
    await driver.drain();
    expect(snapshot()).toBe(before);
    const byId = <T extends { id: string }>(xs: T[]) => [...xs].sort((a, b) => a.id.localeCompare(b.id));
    expect(byId(driver.state().networks)).toEqual(byId(this.driver.state().networks));
    expect(byId(driver.state().endpoints)).toEqual(byId(this.driver.state().endpoints));
    for (const p of this.pools.values()) {
      const again = ipam.requestPool({ addressSpace: p.space, pool: p.cidr, subPool: p.sub ?? '', options: {}, v6: false });
      if (p.dynamic) await expect(again).rejects.toMatchObject({ code: 'TSN_POOL_OVERLAP' });
      else await expect(again).resolves.toMatchObject({ poolId: p.id });
      for (let n = p.range.lo + 1; n < p.range.hi; n++) {
        const got = ipam.requestAddress({ poolId: p.id, address: v4Text(n), options: {} });
        if (this.addresses.has(addrKey(p.id, v4Text(n)))) await expect(got).rejects.toMatchObject({ code: 'TSN_ADDRESS_IN_USE' });
        else await expect(got).resolves.toMatchObject({ address: `${v4Text(n)}/${p.range.prefix}` });
      }
    }
    await driver.stop();
    await copy.close();
  }
}

function ipamOptions(kernel: { routes(v6: boolean): Promise<Array<{ dst: string }>> }): TsnetIpamOptions {
  return {
    defaultPoolsV4: [{ base: DEFAULT_BASE, size: DEFAULT_SIZE }],
    defaultPoolsV6: [],
    hostRoutes: async (v6) => (await kernel.routes(v6)).map((r) => r.dst),
  };
}

// ---- commands ----

type Cmd = fc.AsyncCommand<object, World>;

const command = (name: string, run: (w: World) => void | Promise<void>): Cmd => ({
  check: () => true,
  run: async (_m, w) => {
    await run(w);
    w.assertClean();
  },
  toString: () => name,
});

const times = <T>(n: number, a: fc.Arbitrary<T>) => Array.from({ length: n }, () => a);
const net = fc.nat(NETS - 1);
const ep = fc.nat(EPS - 1);
const pool = fc.nat(POOLS - 1);
const addr = fc.nat(ADDRS - 1);
const explicitOffset = fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined });

const netSpec: fc.Arbitrary<NetSpec> = fc.record({
  mode: fc.constantFrom<NetSpec['mode']>('bridge', 'bridge', 'macvlan'),
  pool: fc.integer({ min: -1, max: EXPLICIT.length - 1 }),
  parent: fc.nat(PARENTS.length - 1),
  shim: fc.boolean(),
  icc: fc.boolean(),
});

/** Weighted towards building things up, so that runs reach crowded pools, shared parents and busy ports. */
const commands: Array<fc.Arbitrary<Cmd>> = [
  ...times(3, fc.tuple(net, netSpec).map(([n, spec]) => command(`CreateNetwork(${n}, ${JSON.stringify(spec)})`, (w) => w.createNetwork(n, spec)))),
  net.map((n) => command(`DeleteNetwork(${n})`, (w) => w.deleteNetwork(n))),
  ...times(4, fc.tuple(net, ep, explicitOffset).map(([n, e, x]) => command(`CreateEndpoint(${n}, ${e}, ${x ?? 'any'})`, (w) => w.createEndpoint(n, e, x)))),
  ...times(
    3,
    fc
      .tuple(net, ep, fc.option(fc.constantFrom(...HOST_PORTS), { nil: undefined }))
      .map(([n, e, port]) => command(`Join+Program(${n}, ${e}, ${port ?? '-'})`, (w) => w.join(n, e, port))),
  ),
  fc.tuple(net, ep).map(([n, e]) => command(`Revoke+Leave(${n}, ${e})`, (w) => w.leave(n, e))),
  fc.tuple(net, ep).map(([n, e]) => command(`DeleteEndpoint(${n}, ${e})`, (w) => w.deleteEndpoint(n, e))),
  ...times(
    2,
    fc
      .tuple(pool, fc.record({ global: fc.boolean(), pool: fc.integer({ min: -1, max: EXPLICIT.length - 1 }), sub: fc.boolean() }))
      .map(([p, spec]) => command(`RequestPool(${p}, ${JSON.stringify(spec)})`, (w) => w.requestPoolSlot(p, spec))),
  ),
  pool.map((p) => command(`ReleasePool(${p})`, (w) => w.releasePoolSlot(p))),
  ...times(3, fc.tuple(pool, addr, explicitOffset).map(([p, a, x]) => command(`RequestAddress(${p}, ${a}, ${x ?? 'any'})`, (w) => w.requestAddressSlot(p, a, x)))),
  fc.tuple(pool, addr).map(([p, a]) => command(`ReleaseAddress(${p}, ${a})`, (w) => w.releaseAddressSlot(p, a))),
  fc.constant(
    command('Quiesce', async (w) => {
      await w.quiesce();
      w.assertClean();
      await w.checkQuiet();
    }),
  ),
];

test('driver and IPAM under dockerd-like concurrent calls keep the model, the store and the kernel in step', async () => {
  await fc.assert(
    fc.asyncProperty(fc.scheduler(), fc.commands(commands, { maxCommands: 60, size: 'large' }), async (s, cmds) => {
      const world = await World.create(s);
      await fc.asyncModelRun(() => ({ model: {}, real: world }), cmds);
      await world.quiesce();
      world.assertClean();
      await world.checkQuiet();
      await world.checkReload();
      if (process.env.TSNET_MODEL_DEBUG) console.log([...cmds].map((c) => c.toString()).join(', '), world.stats());
      await world.driver.stop();
      await world.inner.close();
    }),
    { numRuns: RUNS, seed: SEED },
  );
}, 600_000);

describe('IPAM writes under a store whose commits take time', () => {
  /** Every commit waits at a gate; `drive` opens the newest first until `p` settles (the worst order for writes). */
  function gatedIpam() {
    const inner = new SqliteStore(':memory:');
    const gates: Array<() => void> = [];
    const store = new ScheduledStore(inner, () => new Promise<void>((r) => gates.push(r)));
    const drive = async <T>(p: Promise<T>): Promise<T> => {
      const state = { done: false };
      const settled = p.finally(() => (state.done = true));
      while (!state.done) {
        await new Promise<void>((r) => setImmediate(r));
        gates.pop()?.();
      }
      return settled;
    };
    const opts = ipamOptions({ routes: () => Promise.resolve([]) });
    return { inner, drive, load: (s: SqliteStore | ScheduledStore = store) => TsnetIpam.load(s, opts) };
  }

  test('a ReleaseAddress overtaken by a RequestAddress of the same address leaves the new holder recorded', async () => {
    const { inner, drive, load } = gatedIpam();
    const ipam = await load();
    const { poolId } = await drive(ipam.requestPool({ addressSpace: LOCAL_ADDRESS_SPACE, pool: '10.97.0.0/28', subPool: '', options: {}, v6: false }));
    await drive(ipam.requestAddress({ poolId, address: '10.97.0.5', options: {} }));
    const released = ipam.releaseAddress(poolId, '10.97.0.5');
    const again = ipam.requestAddress({ poolId, address: '10.97.0.5', options: {} });
    await drive(Promise.all([released, again]));
    expect((await inner.all('address')).map((a) => a.address)).toEqual(['10.97.0.5']);
    const reloaded = await load(inner);
    await expect(reloaded.requestAddress({ poolId, address: '10.97.0.5', options: {} })).rejects.toMatchObject({ code: 'TSN_ADDRESS_IN_USE' });
  });

  test('a ReleasePool overtaken by a RequestPool that picks the same default pool leaves the new pool recorded', async () => {
    const { inner, drive, load } = gatedIpam();
    const ipam = await load();
    const req = { addressSpace: LOCAL_ADDRESS_SPACE, pool: '', subPool: '', options: {}, v6: false };
    const first = await drive(ipam.requestPool(req));
    const released = ipam.releasePool(first.poolId);
    const again = ipam.requestPool(req);
    const [, second] = await drive(Promise.all([released, again]));
    expect(second.pool).toBe(first.pool);
    expect((await inner.all('pool')).map((p) => p.id)).toEqual([second.poolId]);
  });
});
