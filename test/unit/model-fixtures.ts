import type { Firewall, Kernel, KernelChange, LinkInfo, RouteInfo } from '../../src/kernel/contract';
import type { FakeKernel } from '../../src/kernel/fake';
import { put, type Store, type StoreOp } from '../../src/store/contract';
import type { CollectionName, Collections } from '../../src/store/records';

/**
 * For the model-based test (model.test.ts): a store and a kernel whose every call is a point where fast-check's
 * scheduler may switch to another flow, an independent IPv4 oracle, and the model's record of who holds what.
 */

/** Awaited before each store or kernel call; resolves when the scheduler lets the caller go on. */
export type Point = (label: string) => Promise<void>;

const opsLabel = (ops: StoreOp[]) => ops.map((o) => `${o.kind} ${o.collection}/${o.key.slice(0, 24)}`).join(', ');

/** The store with a scheduling point before each commit (loading stays direct: it runs once, before any call). */
export class ScheduledStore implements Store {
  constructor(
    readonly inner: Store,
    private readonly point: Point,
  ) {}

  all<C extends CollectionName>(collection: C): Promise<Array<Collections[C]>> {
    return this.inner.all(collection);
  }

  async commit(ops: StoreOp[]): Promise<void> {
    await this.point(`commit ${opsLabel(ops)}`);
    return this.inner.commit(ops);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

const changeLabel = (c: KernelChange) => `${c.op} ${'name' in c ? c.name : 'dev' in c ? c.dev : c.key}`;

/** The fake kernel with a scheduling point before each call, the firewall's included. */
export class ScheduledKernel implements Kernel {
  readonly firewall: Firewall;
  readonly owner: string;

  constructor(
    readonly fake: FakeKernel,
    private readonly point: Point,
  ) {
    this.owner = fake.owner;
    const fw = fake.firewall;
    this.firewall = {
      sync: async (want, patch) => {
        await point('fw sync');
        return fw.sync(want, patch);
      },
      inspect: async () => {
        await point('fw inspect');
        return fw.inspect();
      },
      intact: async () => {
        await point('fw intact');
        return fw.intact();
      },
      removeBase: async () => {
        await point('fw removeBase');
        return fw.removeBase();
      },
      addNetwork: async (n) => {
        await point(`fw addNetwork ${n.bridge}`);
        return fw.addNetwork(n);
      },
      removeNetwork: async (n) => {
        await point(`fw removeNetwork ${n.bridge}`);
        return fw.removeNetwork(n);
      },
      addPorts: async (p) => {
        await point(`fw addPorts ${p.map((x) => x.hostPort).join(',')}`);
        return fw.addPorts(p);
      },
      removePorts: async (p) => {
        await point(`fw removePorts ${p.map((x) => x.hostPort).join(',')}`);
        return fw.removePorts(p);
      },
      addNoIccPorts: async (i) => {
        await point(`fw addNoIccPorts ${i.join(',')}`);
        return fw.addNoIccPorts(i);
      },
      removeNoIccPorts: async (i) => {
        await point(`fw removeNoIccPorts ${i.join(',')}`);
        return fw.removeNoIccPorts(i);
      },
      setForwardGuard: async (f) => {
        await point(`fw setForwardGuard ${f}`);
        return fw.setForwardGuard(f);
      },
      refreshDockerBridges: async () => {
        await point('fw refreshDockerBridges');
        return fw.refreshDockerBridges();
      },
    };
  }

  /** One lane is enough: the scheduler interleaves background work with plugin calls anyway. */
  get background(): Kernel {
    return this;
  }

  async apply(changes: KernelChange[]): Promise<void> {
    await this.point(`apply ${changes.map(changeLabel).join(', ')}`);
    return this.fake.apply(changes);
  }

  async links(): Promise<LinkInfo[]> {
    await this.point('links');
    return this.fake.links();
  }

  async link(name: string): Promise<LinkInfo | undefined> {
    await this.point(`link ${name}`);
    return this.fake.link(name);
  }

  async routes(v6: boolean): Promise<RouteInfo[]> {
    await this.point('routes');
    return this.fake.routes(v6);
  }

  async readSysctl(key: string): Promise<string | undefined> {
    await this.point(`sysctl ${key}`);
    return this.fake.readSysctl(key);
  }
}

/** A copy of every record of `from` in `to` (a restart on the same state, leaving the original alone). */
export async function copyStore(from: Store, to: Store): Promise<void> {
  const collections: CollectionName[] = ['tombstone', 'network', 'endpoint', 'pool', 'address', 'host', 'parent'];
  const ops: StoreOp[] = [];
  for (const c of collections) {
    for (const r of await from.all(c)) ops.push(put(c, 'id' in r ? r.id : 'link' in r ? r.link : 'key' in r ? r.key : 'daemonId' in r ? 'docker' : `${r.poolId}|${r.address}`, r));
  }
  await to.commit(ops);
}

/** An IPv4 prefix as a closed range of 32-bit numbers: the oracle's own arithmetic, not tsnet's netaddr. */
export interface V4Range {
  readonly lo: number;
  readonly hi: number;
  readonly prefix: number;
}

export function v4(text: string): number {
  const parts = text.split('.').map(Number);
  return (((parts[0] * 256 + parts[1]) * 256 + parts[2]) * 256 + parts[3]) >>> 0;
}

export function v4Text(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function v4Range(cidr: string): V4Range {
  const [addr, len] = cidr.split('/');
  const prefix = Number(len);
  const size = 2 ** (32 - prefix);
  const lo = v4(addr) - (v4(addr) % size);
  return { lo, hi: lo + size - 1, prefix };
}

export const rangesOverlap = (a: V4Range, b: V4Range) => a.lo <= b.hi && b.lo <= a.hi;

/** Docker's MAC for an IPv4 address: 02:42 and the address's four bytes. */
export function dockerMac(address: string): string {
  const n = v4(address);
  return ['02', '42', ...[n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/**
 * Who holds each key (an address, a host port) as far as the replies told the model. A release makes the key
 * "releasing" until its reply: the IPAM frees it before it answers, so a concurrent request may rightly get it back
 * first. Generations keep the late reply of that release from freeing the new holder's key.
 */
export class Holdings {
  private readonly held = new Map<string, { gen: number; releasing: boolean }>();
  private gen = 0;

  /** A reply gave `key` out; returns the violation when someone still holds it. */
  grant(key: string, what: string): string | undefined {
    const cur = this.held.get(key);
    this.held.set(key, { gen: ++this.gen, releasing: false });
    return cur && !cur.releasing ? `${what} ${key} handed out while still held` : undefined;
  }

  /** A release of `key` is sent: the token for {@link released}. */
  releasing(key: string): number {
    const cur = this.held.get(key);
    if (!cur) return -1;
    cur.releasing = true;
    return cur.gen;
  }

  released(key: string, token: number): void {
    if (this.held.get(key)?.gen === token) this.held.delete(key);
  }

  /** Held or being released. */
  has(key: string): boolean {
    return this.held.has(key);
  }

  /** Dropped without a release call of its own (its pool went). */
  drop(prefix: string): void {
    for (const k of [...this.held.keys()]) if (k.startsWith(prefix)) this.held.delete(k);
  }

  keys(): string[] {
    return [...this.held.keys()].sort();
  }
}
