import { assertNever } from '../errors';
import { FW_SETS, noElements, wantedElements } from './firewall-render';
import { type Firewall, type FwFamily, type FwInspection, type FwNetwork, type FwPatch, type FwPort, type FwWant, type Kernel, type KernelChange, KernelChangeError, type LinkInfo, type RouteInfo } from './contract';

/** In-memory firewall state for {@link FakeKernel}: networks by bridge and ports by their map key. */
export class FakeFirewall implements Firewall {
  base = false;
  readonly networks = new Map<string, FwNetwork>();
  readonly ports = new Map<string, FwPort>();
  readonly guard = new Set<FwFamily>();
  readonly noIccPorts = new Set<string>();
  readonly calls: string[] = [];
  /** Docker's bridges as the last sync was given them. */
  dockerBridges: string[] = [];
  /** Set by a test: the table lost a chain or set (an inspection says why). */
  damaged: string | undefined;
  /** Set by a test: the DOCKER-USER rule is gone. */
  hookMissing = false;

  static portKey(p: FwPort): string {
    return `${p.hostIp ?? '*'}/${p.proto}/${p.hostPort}/${p.containerIp.includes(':') ? 6 : 4}`;
  }

  private readonly failures = new Map<keyof Firewall, string>();

  /** The next call of firewall method `method` (e.g. 'removePorts') fails with `message` (once). */
  failOn(method: keyof Firewall, message = 'nft: injected failure'): void {
    this.failures.set(method, message);
  }

  /** Records the call; throws when a failure was injected for its method. */
  private record(method: keyof Firewall, detail = ''): void {
    this.calls.push(detail ? `${method} ${detail}` : method);
    const failure = this.failures.get(method);
    if (failure === undefined) return;
    this.failures.delete(method);
    throw new Error(failure);
  }

  /**
   * A full sync is recorded as `sync`, a patch with changes as `sync patch N` (N element changes, `+hook`); an empty patch
   * changes nothing and records nothing (the real firewall runs no nft then).
   */
  async sync(want: FwWant, patch?: FwPatch): Promise<void> {
    const changes = patch ? FW_SETS.reduce((n, set) => n + patch.add[set].length + patch.remove[set].length, 0) : 0;
    if (!patch) this.record('sync');
    else if (changes > 0 || patch.hook) this.record('sync', `patch ${changes}${patch.hook ? ' +hook' : ''}`);
    this.base = true;
    this.damaged = undefined;
    this.hookMissing = false;
    this.networks.clear();
    this.ports.clear();
    this.noIccPorts.clear();
    this.guard.clear();
    for (const n of want.noIccPorts) this.noIccPorts.add(n);
    for (const n of want.networks) this.networks.set(n.bridge, n);
    for (const p of want.ports) this.ports.set(FakeFirewall.portKey(p), p);
    for (const f of want.host.forwardGuard) this.guard.add(f);
    this.dockerBridges = [...want.host.dockerBridges];
  }

  /** The table as its state says; `damaged` (set by a test) stands for a chain or set lost behind tsnet's back. */
  async inspect(): Promise<FwInspection> {
    this.record('inspect');
    if (!this.base) return { table: 'absent', elements: noElements(), hookMissing: false };
    if (this.damaged !== undefined) return { table: 'damaged', why: this.damaged, elements: noElements(), hookMissing: this.hookMissing };
    const want: FwWant = {
      networks: [...this.networks.values()],
      ports: [...this.ports.values()],
      noIccPorts: [...this.noIccPorts],
      host: { dockerBridges: this.dockerBridges, forwardGuard: [...this.guard] },
    };
    return { table: 'intact', elements: wantedElements(want), hookMissing: this.hookMissing };
  }
  async removeBase(): Promise<void> {
    this.record('removeBase');
    this.base = false;
    this.networks.clear();
    this.ports.clear();
    this.noIccPorts.clear();
  }
  async addNetwork(n: FwNetwork): Promise<void> {
    this.record('addNetwork', n.bridge);
    this.base = true;
    this.networks.set(n.bridge, n);
  }
  async removeNetwork(n: FwNetwork): Promise<void> {
    this.record('removeNetwork', n.bridge);
    this.networks.delete(n.bridge);
  }
  async addPorts(ports: FwPort[]): Promise<void> {
    this.record('addPorts', String(ports.length));
    this.base = true;
    // nft refuses a second element with the same key and another value.
    for (const p of ports) if (this.ports.has(FakeFirewall.portKey(p))) throw new Error(`nft: File exists (${FakeFirewall.portKey(p)})`);
    for (const p of ports) this.ports.set(FakeFirewall.portKey(p), p);
  }
  async removePorts(ports: FwPort[]): Promise<void> {
    this.record('removePorts', String(ports.length));
    for (const p of ports) this.ports.delete(FakeFirewall.portKey(p));
  }
  async addNoIccPorts(ifnames: string[]): Promise<void> {
    this.record('addNoIccPorts', ifnames.join(' '));
    this.base = true;
    for (const n of ifnames) this.noIccPorts.add(n);
  }
  async removeNoIccPorts(ifnames: string[]): Promise<void> {
    this.record('removeNoIccPorts', ifnames.join(' '));
    for (const n of ifnames) this.noIccPorts.delete(n);
  }
  async setForwardGuard(family: FwFamily): Promise<void> {
    this.record('setForwardGuard', family);
    this.base = true;
    this.guard.add(family);
  }
  async refreshDockerBridges(): Promise<void> {
    this.record('refreshDockerBridges');
  }
}

/** A call the fake can be held at (see {@link FakeKernel.pauseAt}). */
export type FakeCall = { call: 'link'; name: string } | { call: 'links' } | { call: 'apply'; change: KernelChange };

/** A held call: `reached` resolves when the call arrives, which then waits for `release()` (callable before). */
export interface FakePause {
  reached: Promise<void>;
  release(): void;
}

/**
 * A recording fake of the kernel for unit tests: keeps links, addresses and sysctls in memory with the kernel's
 * failure rules (EEXIST, ENODEV, veth peers dying together) and can be told to fail a chosen change, or to hold a
 * chosen call so tests interleave concurrent work deterministically.
 */
export class FakeKernel implements Kernel {
  readonly firewall = new FakeFirewall();
  readonly owner = 'tsnet:test';
  get background(): this {
    return this;
  }
  /** Every read of links (`links`, `link NAME`), in order: each costs an `ip` spawn in the real kernel. */
  readonly reads: string[] = [];
  /** Every change applied, in order (failed ones excluded). */
  readonly applied: KernelChange[] = [];
  readonly linkMap = new Map<string, LinkInfo & { peer?: string; macvlanMode?: string }>();
  readonly sysctls = new Map<string, string>();
  /** Routes as the kernel keeps them (route.add/route.del change it; tests may seed it). */
  routeTable: RouteInfo[] = [];
  private failures: Array<{ match: (c: KernelChange) => boolean; message: string }> = [];
  private pauses: Array<{ match: (c: FakeCall) => boolean; hit: () => void; gate: Promise<void> }> = [];

  /** The next change matching `match` fails with `message` (once). */
  failOn(match: (c: KernelChange) => boolean, message = 'injected failure'): void {
    this.failures.push({ match, message });
  }

  /** The next call matching `match` (a link lookup or listing, or a batch with a matching change) waits until released (once). */
  pauseAt(match: (c: FakeCall) => boolean): FakePause {
    let hit!: () => void;
    let release!: () => void;
    const reached = new Promise<void>((r) => (hit = r));
    const gate = new Promise<void>((r) => (release = r));
    this.pauses.push({ match, hit, gate });
    return { reached, release };
  }

  private async checkpoint(calls: FakeCall[]): Promise<void> {
    const i = this.pauses.findIndex((p) => calls.some(p.match));
    if (i < 0) return;
    const [p] = this.pauses.splice(i, 1);
    p.hit();
    await p.gate;
  }

  /** Adds a link that tsnet did not create (e.g. a user's bridge). */
  addForeignLink(name: string, kind = 'bridge'): void {
    this.linkMap.set(name, { name, kind, mtu: 1500, mac: '02:00:00:00:00:01', up: true, addresses: [] });
  }

  async apply(changes: KernelChange[]): Promise<void> {
    await this.checkpoint(changes.map((change) => ({ call: 'apply', change })));
    for (let i = 0; i < changes.length; i++) {
      const c = changes[i];
      const f = this.failures.findIndex((x) => x.match(c));
      if (f >= 0) {
        const [fail] = this.failures.splice(f, 1);
        throw new KernelChangeError(c, i, fail.message);
      }
      const err = this.step(c);
      if (err) throw new KernelChangeError(c, i, err);
      this.applied.push(c);
    }
  }

  private step(c: KernelChange): string | undefined {
    const need = (n: string) => (this.linkMap.has(n) ? undefined : `Cannot find device "${n}"`);
    const fresh = (n: string, kind: string, mtu?: number, mac?: string, extra: Partial<LinkInfo & { peer: string; macvlanMode: string }> = {}) => {
      this.linkMap.set(n, { name: n, kind, owner: this.owner, mtu: mtu ?? 1500, mac: mac ?? '02:00:00:00:00:00', up: false, addresses: [], ...extra });
    };
    // A child of `parent` (macvlan, ipvlan, VLAN): the kernel refuses one without its parent or with a taken name.
    const child = (n: string, parent: string, kind: string, mtu?: number, mac?: string, extra: Partial<LinkInfo & { macvlanMode: string }> = {}) => {
      if (this.linkMap.has(n)) return 'File exists';
      const p = this.linkMap.get(parent);
      if (!p) return need(parent);
      // The kernel keeps one port type per parent (macvlan or ipvlan), and a passthru macvlan alone on it.
      const siblings = [...this.linkMap.values()].filter((l) => l.lower === parent && (l.kind === 'macvlan' || l.kind === 'ipvlan'));
      const busy = (s: { kind: string; macvlanMode?: string }) => s.kind !== kind || s.macvlanMode === 'passthru';
      if (kind !== 'vlan' && (siblings.some(busy) || (extra.macvlanMode === 'passthru' && siblings.length > 0))) return 'Device or resource busy';
      fresh(n, kind, mtu ?? p.mtu, mac ?? (kind === 'macvlan' ? undefined : p.mac), { lower: parent, ...extra });
      return undefined;
    };
    switch (c.op) {
      case 'bridge.add':
        if (this.linkMap.has(c.name)) return 'File exists';
        fresh(c.name, 'bridge', c.mtu, c.mac);
        return undefined;
      case 'veth.add':
        if (this.linkMap.has(c.name) || this.linkMap.has(c.peer)) return 'File exists';
        fresh(c.name, 'veth', c.mtu, undefined, { peer: c.peer, lower: c.peer });
        fresh(c.peer, 'veth', c.mtu, c.peerMac, { peer: c.name, lower: c.name });
        return undefined;
      case 'macvlan.add':
        return child(c.name, c.parent, 'macvlan', c.mtu, c.mac, { macvlanMode: c.mode });
      case 'ipvlan.add':
        return child(c.name, c.parent, 'ipvlan', c.mtu);
      case 'vlan.add':
        if ([...this.linkMap.values()].some((l) => l.kind === 'vlan' && l.lower === c.parent && l.vlanId === c.vlanId)) return 'File exists';
        return child(c.name, c.parent, 'vlan', c.mtu, undefined, { vlanId: c.vlanId });
      case 'dummy.add':
        if (this.linkMap.has(c.name)) return 'File exists';
        fresh(c.name, 'dummy', c.mtu);
        return undefined;
      case 'link.master': {
        const l = this.linkMap.get(c.name);
        if (!l) return need(c.name);
        return need(c.master) ?? void (l.master = c.master);
      }
      case 'link.up': {
        const l = this.linkMap.get(c.name);
        if (!l) return need(c.name);
        l.up = true;
        return undefined;
      }
      case 'link.del': {
        const l = this.linkMap.get(c.name);
        if (!l) return need(c.name);
        this.linkMap.delete(c.name);
        if (l.peer) this.linkMap.delete(l.peer);
        for (const other of [...this.linkMap.values()]) {
          if (other.master === c.name) delete other.master;
          // Stacked links (macvlan, ipvlan, VLAN children) die with their parent, as in the kernel.
          if (other.lower === c.name && other.kind !== 'veth') this.linkMap.delete(other.name);
        }
        this.routeTable = this.routeTable.filter((r) => r.dev !== c.name);
        return undefined;
      }
      case 'addr.add': {
        const l = this.linkMap.get(c.dev);
        if (!l) return need(c.dev);
        if (l.addresses.includes(c.cidr)) return 'File exists';
        l.addresses.push(c.cidr);
        return undefined;
      }
      case 'addr.del': {
        const l = this.linkMap.get(c.dev);
        if (!l) return need(c.dev);
        if (!l.addresses.includes(c.cidr)) return 'Cannot assign requested address';
        l.addresses = l.addresses.filter((a) => a !== c.cidr);
        return undefined;
      }
      case 'route.add':
        if (!this.linkMap.has(c.dev)) return need(c.dev);
        if (this.routeTable.some((r) => r.dst === c.dst && r.dev === c.dev)) return 'File exists';
        this.routeTable.push({ dst: c.dst, dev: c.dev });
        return undefined;
      case 'route.del': {
        const before = this.routeTable.length;
        this.routeTable = this.routeTable.filter((r) => !(r.dst === c.dst && r.dev === c.dev));
        return this.routeTable.length === before ? 'No such process' : undefined;
      }
      case 'sysctl.set':
        this.sysctls.set(c.key, c.value);
        return undefined;
      default:
        return assertNever(c, 'kernel change');
    }
  }

  readSysctl(key: string): Promise<string | undefined> {
    return Promise.resolve(this.sysctls.get(key));
  }

  async links(): Promise<LinkInfo[]> {
    this.reads.push('links');
    await this.checkpoint([{ call: 'links' }]);
    return [...this.linkMap.values()].map((l) => ({ ...l, addresses: [...l.addresses] }));
  }

  async link(name: string): Promise<LinkInfo | undefined> {
    this.reads.push(`link ${name}`);
    await this.checkpoint([{ call: 'link', name }]);
    const l = this.linkMap.get(name);
    return l ? { ...l, addresses: [...l.addresses] } : undefined;
  }

  routes(v6: boolean): Promise<RouteInfo[]> {
    return Promise.resolve(this.routeTable.filter((r) => r.dst.includes(':') === v6));
  }
}
