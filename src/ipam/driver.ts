import type { DefaultPoolSpec } from '../config';
import { tsnetError } from '../errors';
import { log } from '../log';
import { del, put, type Store, type StoreOp } from '../store/contract';
import type { AddressRecord, PoolRecord } from '../store/records';
import { AddrSet } from './addrset';
import {
  type AddressRequest,
  type AllocatedAddress,
  type AllocatedPool,
  GATEWAY_ADDRESS_TYPE,
  GLOBAL_ADDRESS_SPACE,
  type Ipam,
  type IpamCapabilities,
  LOCAL_ADDRESS_SPACE,
  type PoolRequest,
  REQUEST_ADDRESS_TYPE,
  SERIAL_OPTION,
} from './contract';
import { addressAt, addressOf, type Cidr, contains, offsetOf, overlaps, parseCidr, parseIp, tryParseIp } from '../netaddr';
import type { HostAddressPool } from '../driver/contract';
import { Mutex } from '../mutex';
import { type DefaultPool, dynamicRange, hostRange, parseDefaultPools, parsePool, pickDefaultPool, reservedRole, routeObstacles } from './pools';

/** What {@link TsnetIpam.load} needs besides the store. */
export interface TsnetIpamOptions {
  defaultPoolsV4: DefaultPoolSpec[];
  defaultPoolsV6: DefaultPoolSpec[];
  /** Destination CIDRs of the host's routes of one family; default pools overlapping them are skipped. */
  hostRoutes: (v6: boolean) => Promise<string[]>;
}

/** In-memory state of one pool. `record` is replaced on change, never mutated, so ops can hold it safely. */
interface PoolState {
  record: PoolRecord;
  readonly cidr: Cidr;
  readonly sub: Cidr | undefined;
  readonly used: AddrSet;
  /** Changes whenever the pool is made or its references change (see {@link Allocations}). */
  token: number;
  /** Each allocated offset's kind and token (given when it was allocated). */
  readonly held: Map<bigint, { kind: AddressKind; token: number }>;
}

/**
 * What the IPAM holds, for reclaiming what dockerd forgot (src/reclaim/). Each entry carries a token that is new
 * whenever the allocation is made again or (pools) its references change, so a removal decided on an earlier look
 * applies only to the very allocation that was looked at.
 */
export interface Allocations {
  pools: Array<{ poolId: string; pool: string; subPool?: string; token: number }>;
  addresses: Array<{ poolId: string; address: string; kind: AddressRecord['kind']; token: number }>;
}

/** How full one pool is: addresses held (containers, gateways, aux and host addresses) of those a host may have. */
export interface PoolUsage {
  poolId: string;
  used: number;
  size: number;
}

interface NewPool {
  readonly id: string;
  readonly addressSpace: string;
  readonly cidr: Cidr;
  readonly sub: Cidr | undefined;
  readonly options: Record<string, string>;
  readonly dynamic: boolean;
}

type AddressKind = AddressRecord['kind'];

/** Store key of a pool: `addressSpace/pool[/subPool]`, also its PoolID. */
export function poolIdOf(addressSpace: string, pool: Cidr, sub?: Cidr): string {
  return sub ? `${addressSpace}/${pool.text}/${sub.text}` : `${addressSpace}/${pool.text}`;
}

/** Store key of an address record: `poolId|address`. */
export function addressKey(poolId: string, address: string): string {
  return `${poolId}|${address}`;
}

function resolveAddressSpace(space: string): string {
  if (space === '') return LOCAL_ADDRESS_SPACE;
  if (space === LOCAL_ADDRESS_SPACE || space === GLOBAL_ADDRESS_SPACE) return space;
  throw tsnetError(
    'TSN_INVALID_OPTION',
    `AddressSpace "${space}": unknown, expected ${LOCAL_ADDRESS_SPACE} or ${GLOBAL_ADDRESS_SPACE}`,
  );
}

function parseExplicitPool(req: PoolRequest): { cidr: Cidr; sub: Cidr | undefined } {
  const cidr = parsePool('Pool', req.pool);
  if (cidr.v6 !== req.v6) {
    throw tsnetError('TSN_INVALID_ADDRESS', `Pool "${req.pool}" is IPv${cidr.v6 ? 6 : 4} but V6 is ${req.v6}`);
  }
  if (req.subPool === '') return { cidr, sub: undefined };
  const sub = parsePool('SubPool', req.subPool);
  if (!contains(cidr, sub)) {
    throw tsnetError('TSN_INVALID_ADDRESS', `SubPool "${req.subPool}" is not inside Pool "${req.pool}"`);
  }
  return { cidr, sub };
}

function allocatedPool(state: PoolState): AllocatedPool {
  return { poolId: state.record.id, pool: state.cidr.text, data: {} };
}

function withRefs(record: PoolRecord, delta: number): PoolRecord {
  return { ...record, refs: record.refs + delta };
}

/** Where the next serial allocation starts, if the pool has a valid cursor. */
function serialCursor(record: PoolRecord): bigint | undefined {
  return record.serialCursor !== undefined && /^[0-9]+$/.test(record.serialCursor)
    ? BigInt(record.serialCursor)
    : undefined;
}

/** Serial allocation is asked per address, or for every address of a pool by `--ipam-opt`. */
function isSerial(req: AddressRequest, pool: PoolRecord): boolean {
  return (req.options[SERIAL_OPTION] ?? pool.options[SERIAL_OPTION]) === 'true';
}

function describePool(cidr: Cidr, sub: Cidr | undefined): string {
  return sub ? `${cidr.text} (ip-range ${sub.text})` : cidr.text;
}

function rangeName(state: PoolState): string {
  return state.sub ? `ip-range ${state.sub.text} of pool ${state.cidr.text}` : `pool ${state.cidr.text}`;
}

/**
 * tsnet's own IPAM: pools and addresses live in memory (one {@link AddrSet} per pool) and every change is committed
 * to the store before the call resolves. Each call validates everything, then reserves in memory synchronously
 * (so concurrent calls never collide), then awaits the commit and undoes the reservation if the commit fails.
 */
export class TsnetIpam implements Ipam {
  private readonly pools = new Map<string, PoolState>();
  private lastToken = 0;
  /** Commits in the order of the memory changes they record (see persist). */
  private readonly writes = new Mutex();

  private constructor(
    private readonly store: Store,
    private readonly defaultsV4: DefaultPool[],
    private readonly defaultsV6: DefaultPool[],
    private readonly hostRoutes: (v6: boolean) => Promise<string[]>,
  ) {}

  /**
   * Validates the default pool specs (TSN_INVALID_OPTION) and loads every pool and address from `store`. A corrupt
   * pool record fails the load (TSN_STORE); an address record that fits no pool is logged and ignored.
   */
  static async load(store: Store, opts: TsnetIpamOptions): Promise<TsnetIpam> {
    const ipam = new TsnetIpam(
      store,
      parseDefaultPools(opts.defaultPoolsV4, false),
      parseDefaultPools(opts.defaultPoolsV6, true),
      opts.hostRoutes,
    );
    for (const record of await store.all('pool')) ipam.restorePool(record);
    for (const record of await store.all('address')) ipam.restoreAddress(record);
    return ipam;
  }

  /**
   * Addresses the network driver needs on the host (a macvlan host shim), from the pool a network was created on
   * when that pool is this IPAM's: dockerd never hands them out to a container then.
   */
  readonly hostAddresses: HostAddressPool = {
    reserve: async (addressSpace, pool) => {
      const state = [...this.pools.values()].find((p) => p.record.addressSpace === addressSpace && p.record.pool === pool);
      if (!state) return undefined;
      const got = await this.requestAddress({ poolId: state.record.id, address: '', options: {} });
      return { poolId: state.record.id, address: addressOf(got.address) };
    },
    release: (poolId, address) => this.releaseAddress(poolId, address),
  };

  /** tsnet persists its allocations, so dockerd needs neither MACs nor a replay at start. */
  capabilities(): IpamCapabilities {
    return { requiresMACAddress: false, requiresRequestReplay: false };
  }

  /** The two address spaces tsnet accepts in RequestPool (an empty one means local). */
  defaultAddressSpaces(): { local: string; global: string } {
    return { local: LOCAL_ADDRESS_SPACE, global: GLOBAL_ADDRESS_SPACE };
  }

  async requestPool(req: PoolRequest): Promise<AllocatedPool> {
    const addressSpace = resolveAddressSpace(req.addressSpace);
    if (req.pool === '') {
      if (req.subPool !== '') throw tsnetError('TSN_INVALID_REQUEST', `SubPool "${req.subPool}" given without Pool`);
      return this.requestDefaultPool(addressSpace, req);
    }
    const { cidr, sub } = parseExplicitPool(req);
    const id = poolIdOf(addressSpace, cidr, sub);
    const existing = this.pools.get(id);
    // A pool tsnet picked for a request without Pool was not asked for by this CIDR: sharing it would be wrong.
    if (existing && !existing.record.dynamic) return this.addReference(existing);
    this.assertNoOverlap(addressSpace, cidr, sub);
    return this.createPool({ id, addressSpace, cidr, sub, options: req.options, dynamic: false });
  }

  async releasePool(poolId: string): Promise<void> {
    const state = this.pools.get(poolId);
    if (!state) return;
    if (state.record.refs > 1) {
      state.record = withRefs(state.record, -1);
      state.token = this.nextToken();
      await this.persist([put('pool', poolId, state.record)], () => {
        state.record = withRefs(state.record, 1);
      });
      return;
    }
    await this.dropPool(state);
  }

  /** The pool with all its references and addresses. */
  private async dropPool(state: PoolState): Promise<void> {
    const poolId = state.record.id;
    this.pools.delete(poolId);
    const ops: StoreOp[] = [del('pool', poolId)];
    for (const offset of state.used.offsets()) {
      ops.push(del('address', addressKey(poolId, addressAt(state.cidr, offset))));
    }
    await this.persist(ops, () => {
      if (!this.pools.has(poolId)) this.pools.set(poolId, state);
    });
    log.debug('ipam: pool released', { poolId, addresses: ops.length - 1 });
  }

  /** Every pool and address with its token (see {@link Allocations}). */
  allocations(): Allocations {
    const out: Allocations = { pools: [], addresses: [] };
    for (const state of this.pools.values()) {
      const { id: poolId, pool, subPool } = state.record;
      out.pools.push({ poolId, pool, ...(subPool === undefined ? {} : { subPool }), token: state.token });
      for (const [offset, { kind, token }] of state.held) out.addresses.push({ poolId, address: addressAt(state.cidr, offset), kind, token });
    }
    return out;
  }

  /** Every pool's usage, for metrics (computed when asked: a scrape, not a plugin call, pays for it). */
  poolUsage(): PoolUsage[] {
    return [...this.pools.values()].map((state) => {
      const { lo, hi } = hostRange(state.cidr);
      return { poolId: state.record.id, used: Number(state.used.count()), size: Number(hi - lo + 1n) };
    });
  }

  /**
   * Releases a pool with every reference and address, only if it is still the allocation `token` names (unchanged
   * since it was looked at). Resolves whether it did.
   */
  async forgetPool(poolId: string, token: number): Promise<boolean> {
    const state = this.pools.get(poolId);
    if (state?.token !== token) return false;
    await this.dropPool(state);
    return true;
  }

  /** Releases an address only if it is still the allocation `token` names. Resolves whether it did. */
  async forgetAddress(poolId: string, address: string, token: number): Promise<boolean> {
    const state = this.pools.get(poolId);
    const offset = state ? offsetOf(state.cidr, parseIp('Address', address)) : undefined;
    if (!state || offset === undefined || state.held.get(offset)?.token !== token) return false;
    await this.releaseAddress(poolId, address);
    return true;
  }

  private nextToken(): number {
    return ++this.lastToken;
  }

  async requestAddress(req: AddressRequest): Promise<AllocatedAddress> {
    const state = this.pools.get(req.poolId);
    if (!state) throw tsnetError('TSN_UNKNOWN_POOL', `PoolID "${req.poolId}": no such pool`);
    const kind: AddressKind = req.options[REQUEST_ADDRESS_TYPE] === GATEWAY_ADDRESS_TYPE ? 'gateway' : 'address';
    if (req.address !== '') return this.reserve(state, this.explicitOffset(state, req.address), kind, false);
    const serial = isSerial(req, state.record);
    return this.reserve(state, this.freeOffset(state, serial), kind, serial);
  }

  async releaseAddress(poolId: string, address: string): Promise<void> {
    const state = this.pools.get(poolId);
    if (!state) return;
    const offset = offsetOf(state.cidr, parseIp('Address', address));
    if (offset === undefined || !state.used.remove(offset)) return;
    const held = state.held.get(offset);
    state.held.delete(offset);
    await this.persist([del('address', addressKey(poolId, addressAt(state.cidr, offset)))], () => {
      if (state.used.has(offset)) return;
      state.used.add(offset);
      if (held) state.held.set(offset, held);
    });
  }

  /**
   * Commits `ops`; if that fails, reverts the in-memory change with `undo` and rethrows. Commits go to the store one at
   * a time, in the order of the memory changes: a release frees its address (or pool) in memory at once, so a request
   * may take it again before the release's commit lands; out of order, that late delete would erase the new holder's
   * record, and the next start would hand the address out twice.
   */
  private async persist(ops: StoreOp[], undo: () => void): Promise<void> {
    try {
      await this.writes.run(() => this.store.commit(ops));
    } catch (err) {
      undo();
      throw err;
    }
  }

  private async requestDefaultPool(addressSpace: string, req: PoolRequest): Promise<AllocatedPool> {
    const routes = await this.hostRoutes(req.v6);
    // From here on synchronous up to the commit, so concurrent requests cannot pick the same pool. Pools of every
    // address space are avoided: they all end up routed on this one host.
    const taken = [...this.pools.values()].map((p) => p.cidr);
    const defaults = req.v6 ? this.defaultsV6 : this.defaultsV4;
    const cidr = pickDefaultPool(defaults, [...taken, ...routeObstacles(routes, req.v6)]);
    if (!cidr) {
      const bases = defaults.map((d) => `${d.base.text} (/${d.size})`).join(', ') || 'none configured';
      throw tsnetError('TSN_NO_AVAILABLE_POOL', `no free default IPv${req.v6 ? 6 : 4} pool left in ${bases}`);
    }
    const id = poolIdOf(addressSpace, cidr);
    return this.createPool({ id, addressSpace, cidr, sub: undefined, options: req.options, dynamic: true });
  }

  private assertNoOverlap(addressSpace: string, cidr: Cidr, sub: Cidr | undefined): void {
    for (const other of this.pools.values()) {
      if (other.record.addressSpace === addressSpace && overlaps(other.cidr, cidr)) {
        const asked = sub ? `Pool "${cidr.text}" (SubPool "${sub.text}")` : `Pool "${cidr.text}"`;
        throw tsnetError(
          'TSN_POOL_OVERLAP',
          `${asked} overlaps pool ${describePool(other.cidr, other.sub)} in address space ${addressSpace}`,
        );
      }
    }
  }

  private async createPool(p: NewPool): Promise<AllocatedPool> {
    const record: PoolRecord = {
      id: p.id,
      addressSpace: p.addressSpace,
      pool: p.cidr.text,
      ...(p.sub ? { subPool: p.sub.text } : {}),
      v6: p.cidr.v6,
      refs: 1,
      options: { ...p.options },
      dynamic: p.dynamic,
    };
    const state: PoolState = { record, cidr: p.cidr, sub: p.sub, used: new AddrSet(), token: this.nextToken(), held: new Map() };
    this.pools.set(p.id, state);
    await this.persist([put('pool', p.id, record)], () => this.undoReference(state));
    log.debug('ipam: pool created', { poolId: p.id, dynamic: p.dynamic });
    return allocatedPool(state);
  }

  private async addReference(state: PoolState): Promise<AllocatedPool> {
    state.record = withRefs(state.record, 1);
    state.token = this.nextToken();
    await this.persist([put('pool', state.record.id, state.record)], () => this.undoReference(state));
    return allocatedPool(state);
  }

  /** Drops a reference whose commit failed; the pool goes when none is left. */
  private undoReference(state: PoolState): void {
    state.record = withRefs(state.record, -1);
    if (state.record.refs <= 0 && this.pools.get(state.record.id) === state) this.pools.delete(state.record.id);
  }

  /** Validates an explicit address: anywhere in the pool (not only the ip-range), not reserved, not taken. */
  private explicitOffset(state: PoolState, address: string): bigint {
    const offset = offsetOf(state.cidr, parseIp('Address', address));
    if (offset === undefined) {
      throw tsnetError('TSN_INVALID_ADDRESS', `Address "${address}": not in pool ${state.cidr.text}`);
    }
    const role = reservedRole(state.cidr, offset);
    if (role) throw tsnetError('TSN_INVALID_ADDRESS', `Address "${address}": is ${role} of pool ${state.cidr.text}`);
    if (state.used.has(offset)) {
      throw tsnetError('TSN_ADDRESS_IN_USE', `Address "${address}": already allocated in pool ${state.cidr.text}`);
    }
    return offset;
  }

  /** The lowest free offset of the dynamic range, or with `serial` the first free at or after the cursor. */
  private freeOffset(state: PoolState, serial: boolean): bigint {
    const { lo, hi } = dynamicRange(state.cidr, state.sub);
    const offset = state.used.firstFree(lo, hi, serial ? serialCursor(state.record) : undefined);
    if (offset === undefined) {
      throw tsnetError('TSN_NO_AVAILABLE_IPS', `no available IP address left in ${rangeName(state)}`);
    }
    return offset;
  }

  private async reserve(
    state: PoolState,
    offset: bigint,
    kind: AddressKind,
    serial: boolean,
  ): Promise<AllocatedAddress> {
    const poolId = state.record.id;
    const address = addressAt(state.cidr, offset);
    state.used.add(offset);
    state.held.set(offset, { kind, token: this.nextToken() });
    const ops: StoreOp[] = [put('address', addressKey(poolId, address), { poolId, address, kind })];
    const cursor = serial ? this.advanceCursor(state, offset) : undefined;
    if (cursor) ops.push(cursor.op);
    await this.persist(ops, () => {
      state.used.remove(offset);
      state.held.delete(offset);
      cursor?.undo();
    });
    return { address: `${address}/${state.cidr.prefix}`, data: {} };
  }

  /** Moves the serial cursor past `offset`; the undo restores it only if nothing moved it since. */
  private advanceCursor(state: PoolState, offset: bigint): { op: StoreOp; undo: () => void } {
    const before = state.record.serialCursor;
    const after = (offset + 1n).toString();
    state.record = { ...state.record, serialCursor: after };
    return {
      op: put('pool', state.record.id, state.record),
      undo: () => {
        if (state.record.serialCursor === after) state.record = { ...state.record, serialCursor: before };
      },
    };
  }

  /** Stored pools are parsed, not judged: one accepted before a policy change keeps working until released. */
  private restorePool(record: PoolRecord): void {
    const cidr = parseCidr(`stored pool ${record.id}`, record.pool, 'TSN_STORE');
    const sub =
      record.subPool === undefined
        ? undefined
        : parseCidr(`stored pool ${record.id} subPool`, record.subPool, 'TSN_STORE');
    this.pools.set(record.id, { record, cidr, sub, used: new AddrSet(), token: this.nextToken(), held: new Map() });
  }

  private restoreAddress(record: AddressRecord): void {
    const state = this.pools.get(record.poolId);
    const ip = tryParseIp(record.address);
    const offset = state && ip ? offsetOf(state.cidr, ip) : undefined;
    if (!state || offset === undefined || state.used.has(offset)) {
      log.warn('ipam: ignoring stored address that fits no pool or is a duplicate', {
        poolId: record.poolId,
        address: record.address,
      });
      return;
    }
    state.used.add(offset);
    state.held.set(offset, { kind: record.kind, token: this.nextToken() });
  }
}
