import { tsnetError } from '../errors';
import { log, since } from '../log';
import { elapsed, emit } from '../telemetry/hook';
import type { Firewall, FwFamily, FwInspection, FwNetwork, FwPatch, FwPort, FwWant, LinkInfo } from './contract';
import { execFileInput, type ExecResult } from './exec';
import { DEFAULT_TABLE, renderDockerBridges, renderElementDiff, renderForwardGuard, renderFull, renderNetwork, renderNoIccPorts, renderPorts } from './firewall-render';
import { inspection, type NftTable, parseNftTable, sameRule } from './nft-json';
import { isDockerBridge } from './names';
import { Mutex } from '../mutex';

const NFT = 'nft';
const IPTABLES = ['iptables', 'ip6tables'] as const;
/** The chains holding tsnet's mark-accept rule (see ensureDockerUserHook). */
const HOOK_CHAINS = ['DOCKER-USER', 'FORWARD'] as const;
type HookChain = (typeof HOOK_CHAINS)[number];
/** dockerd's jump, as `iptables -S FORWARD` prints it. */
const JUMP = ['-A', 'FORWARD', '-j', 'DOCKER-USER'];
/** What nft says when the table, a set or a map (or an element being deleted) does not exist. */
const GONE = /No such file or directory/;

export type ExecFn = (file: string, args: string[], input?: string) => Promise<ExecResult>;

export interface NftFirewallDeps {
  /** Runs nft/iptables (unit tests inject a stub; they never run the real tools). */
  exec?: ExecFn;
  /** The host's links, to find Docker's bridges; without it the dockerbr set stays empty. */
  links?: () => Promise<LinkInfo[]>;
}

function portKey(p: FwPort): string {
  return `${p.hostIp ?? '*'}/${p.proto}/${p.hostPort}/${p.containerIp.includes(':') ? 6 : 4}`;
}

/** Every nft and iptables run reported to the telemetry hook as a kernel step. */
function timed(exec: ExecFn): ExecFn {
  return async (file, args, input) => {
    const step = file === NFT ? 'nft' : 'iptables';
    const start = performance.now();
    try {
      const res = await exec(file, args, input);
      emit({ kind: 'kernel', step, ms: elapsed(start), ok: res.code === 0 });
      return res;
    } catch (err) {
      emit({ kind: 'kernel', step, ms: elapsed(start), ok: false });
      throw err;
    }
  };
}

/**
 * tsnet's firewall: the table rendered by firewall-render.ts, changed by element adds and deletes in atomic
 * `nft -f` transactions.
 *
 * In nftables an accept is final only within its own base chain: dockerd's `ip filter FORWARD` (policy DROP when
 * dockerd enabled forwarding itself) still sees the packet. So tsnet marks what it accepts, and keeps one rule
 * accepting that mark in dockerd's supported hook, DOCKER-USER, and its twin in FORWARD (see ensureDockerUserHook).
 *
 * It keeps in memory what its table holds, so a table deleted behind its back (`nft flush ruleset`, a firewalld
 * reload) is rebuilt whole, in the transaction of the change that found it missing.
 */
export class NftFirewall implements Firewall {
  private readonly hooking = new Mutex();
  /** The base ruleset and hook are known to be in place (set by this process; reset by removeBase or a lost table). */
  private baseReady = false;
  private readonly networks = new Map<string, FwNetwork>();
  private readonly ports = new Map<string, FwPort>();
  private readonly noIccPorts = new Set<string>();
  private dockerBridges: string[] = [];
  private readonly guard = new Set<FwFamily>();
  private readonly exec: ExecFn;

  constructor(
    private readonly mark: number,
    private readonly table = DEFAULT_TABLE,
    private readonly deps: NftFirewallDeps = {},
  ) {
    this.exec = timed(deps.exec ?? execFileInput);
  }

  private get markHex(): string {
    return `0x${this.mark.toString(16).padStart(8, '0')}`;
  }

  async sync(want: FwWant, patch?: FwPatch): Promise<void> {
    this.networks.clear();
    this.ports.clear();
    this.noIccPorts.clear();
    this.guard.clear();
    for (const n of want.noIccPorts) this.noIccPorts.add(n);
    for (const n of want.networks) this.networks.set(n.bridge, n);
    for (const p of want.ports) this.ports.set(portKey(p), p);
    for (const f of want.host.forwardGuard) this.guard.add(f);
    this.dockerBridges = [...want.host.dockerBridges].sort();
    if (!patch) return this.rebuild(false);
    const lines = renderElementDiff(patch, this.table);
    if (lines.length > 0) await this.nft(lines.join('\n'));
    if (patch.hook) await this.ensureDockerUserHook();
    this.baseReady = true;
  }

  inspect(): Promise<FwInspection> {
    return this.read(false);
  }

  /** tsnet's tables and DOCKER-USER rule; `terse`: without elements (nft -t), which the inspection then lacks. */
  private async read(terse: boolean): Promise<FwInspection> {
    const list = (family: string) => this.exec(NFT, [...(terse ? ['-t'] : []), '-j', 'list', 'table', family, this.table]);
    const [inet, bridge, ...hooks] = await Promise.all([
      list('inet'),
      list('bridge'),
      ...IPTABLES.map((bin) => this.exec(bin, ['-w', '-t', 'filter', '-S', 'DOCKER-USER']).catch(() => undefined)),
    ]);
    // Per binary with dockerd's DOCKER-USER (it lists, exit 0): either of tsnet's two rules absent.
    const gaps = await Promise.all(hooks.map(async (h, i) => (h?.code === 0 ? (await this.hookGaps(IPTABLES[i], h.stdout)).length : 0)));
    const hookMissing = gaps.some((n) => n > 0);
    const read = (res: ExecResult, family: 'inet' | 'bridge'): NftTable | undefined => {
      if (res.code === 0) return parseNftTable(res.stdout);
      if (GONE.test(res.stderr)) return undefined;
      throw this.failure(res, `list table ${family} ${this.table}`);
    };
    return inspection({ inet: read(inet, 'inet'), bridge: read(bridge, 'bridge') }, hookMissing);
  }

  async removeBase(): Promise<void> {
    this.baseReady = false;
    this.networks.clear();
    this.ports.clear();
    this.noIccPorts.clear();
    // Both tables in one transaction (one nft run); when one is already gone, each on its own.
    await this.remove([`delete table inet ${this.table}`, `delete table bridge ${this.table}`]);
    for (const bin of IPTABLES) {
      for (const chain of HOOK_CHAINS) {
        const del = await this.exec(bin, ['-w', '-t', 'filter', '-D', ...this.hookRule(chain)]).catch(() => undefined);
        if (del?.code === 0) log.debug('firewall change', { cmd: `${bin} -D ${this.hookRule(chain).join(' ')}` });
      }
    }
  }

  async addNetwork(n: FwNetwork): Promise<void> {
    // Docker's bridges come with every rebuild and the link watcher keeps them current in between: no link dump here,
    // whose cost grows with every veth on the host.
    this.networks.set(n.bridge, n);
    await this.add(renderNetwork('add', n, this.table), () => this.networks.delete(n.bridge));
  }

  removeNetwork(n: FwNetwork): Promise<void> {
    this.networks.delete(n.bridge);
    return this.remove(renderNetwork('delete', n, this.table));
  }

  addPorts(ports: FwPort[]): Promise<void> {
    const fresh = ports.filter((p) => !this.ports.has(portKey(p)));
    for (const p of fresh) this.ports.set(portKey(p), p);
    return this.add(renderPorts('add', ports, this.table), () => fresh.forEach((p) => this.ports.delete(portKey(p))));
  }

  removePorts(ports: FwPort[]): Promise<void> {
    for (const p of ports) this.ports.delete(portKey(p));
    return this.remove(renderPorts('delete', ports, this.table));
  }

  addNoIccPorts(ifnames: string[]): Promise<void> {
    const fresh = ifnames.filter((n) => !this.noIccPorts.has(n));
    for (const n of fresh) this.noIccPorts.add(n);
    return this.add(renderNoIccPorts('add', ifnames, this.table), () => fresh.forEach((n) => this.noIccPorts.delete(n)));
  }

  removeNoIccPorts(ifnames: string[]): Promise<void> {
    for (const n of ifnames) this.noIccPorts.delete(n);
    return this.remove(renderNoIccPorts('delete', ifnames, this.table));
  }

  async setForwardGuard(family: FwFamily): Promise<void> {
    if (this.guard.has(family)) return;
    this.guard.add(family);
    const lines = renderForwardGuard(family, this.table);
    // A restarted tsnet finds its table still full in the kernel: the element goes in alone. A rebuild from memory,
    // which holds no network before reconcile's sync, would empty every set and drop the containers' forwarded
    // traffic until that sync.
    if (!this.baseReady && (await this.run(lines.join('\n'))).code === 0) return;
    await this.add(lines, () => this.guard.delete(family));
  }

  async refreshDockerBridges(): Promise<void> {
    if (!(await this.readDockerBridges())) return;
    // Before the first change there is no table to update; the base brings the set with it.
    if (this.baseReady) await this.add(renderDockerBridges(this.dockerBridges, this.table), () => undefined);
  }

  /** The cheap check: the same read as {@link inspect} without elements (`nft -t`), so its cost does not grow. */
  async intact(): Promise<boolean> {
    const i = await this.read(true);
    return i.table === 'intact' && !i.hookMissing;
  }

  /** Re-reads Docker's bridges from the host; true when the list changed. */
  private async readDockerBridges(): Promise<boolean> {
    if (!this.deps.links) return false;
    const names = (await this.deps.links()).filter(isDockerBridge).map((l) => l.name).sort();
    if (names.join(' ') === this.dockerBridges.join(' ')) return false;
    this.dockerBridges = names;
    log.debug('docker bridges', { bridges: names });
    return true;
  }

  /**
   * Adds elements. Without the base (first change, or after removeBase) the whole table goes in one transaction;
   * when nft says the table or a set is gone (deleted behind tsnet's back) it is rebuilt the same way, once.
   * `undo` forgets the change in memory when it could not be made.
   */
  private async add(lines: string[], undo: () => void): Promise<void> {
    try {
      if (this.baseReady) {
        if (lines.length === 0) return;
        const res = await this.run(lines.join('\n'));
        if (res.code === 0) return;
        if (!GONE.test(res.stderr)) throw this.failure(res, lines.join('\n'));
        log.warn('firewall table or set missing (removed behind tsnet\'s back); rebuilding it', { table: this.table });
        this.baseReady = false;
      }
      await this.rebuild();
    } catch (err) {
      undo();
      throw err;
    }
  }

  /**
   * Deletes elements as one transaction. If some are already gone: when the whole table went, it is rebuilt from
   * what remains (nothing left to delete, and the rest of the rules come back); else the rest one by one.
   */
  private async remove(lines: string[]): Promise<void> {
    if (lines.length === 0) return;
    const res = await this.run(lines.join('\n'));
    if (res.code === 0) return;
    if (!GONE.test(res.stderr)) throw this.failure(res, lines.join('\n'));
    if (this.baseReady && !(await this.tableExists())) {
      log.warn('firewall table missing (removed behind tsnet\'s back); rebuilding it', { table: this.table });
      this.baseReady = false;
      return this.rebuild();
    }
    for (const line of lines) await this.nft(line, GONE);
  }

  /**
   * The whole table from memory in one transaction (base, every set refilled), then the DOCKER-USER hook. Docker's
   * bridges are read from the host first (the table may have been gone for a while) unless the caller just did.
   */
  private async rebuild(readBridges = true): Promise<void> {
    if (readBridges) await this.readDockerBridges();
    const host = { dockerBridges: this.dockerBridges, forwardGuard: [...this.guard].sort() };
    await this.nft(renderFull(this.mark, [...this.networks.values()], [...this.ports.values()], this.table, host, [...this.noIccPorts].sort()));
    await this.ensureDockerUserHook();
    this.baseReady = true;
  }

  private async tableExists(): Promise<boolean> {
    return (await this.exec(NFT, ['list', 'table', 'inet', this.table])).code === 0;
  }

  private async run(script: string): Promise<ExecResult> {
    const start = performance.now();
    const res = await this.exec(NFT, ['-f', '-'], script + '\n');
    if (res.code === 0) log.debug('firewall change', { script, ms: since(start) });
    return res;
  }

  private failure(res: ExecResult, script: string): Error {
    return tsnetError('TSN_KERNEL', `nft: ${res.stderr.trim().split('\n')[0]} (${script.split('\n').length} line script)`, new Error(res.stderr));
  }

  private async nft(script: string, tolerate?: RegExp): Promise<void> {
    const res = await this.run(script);
    if (res.code !== 0 && !tolerate?.test(res.stderr)) throw this.failure(res, script);
  }

  private hookRule(chain: HookChain): string[] {
    const m = `${this.markHex}/${this.markHex}`;
    // The comment names the table, so two tsnets on one host (each with its own table) own distinct rules.
    return [chain, '-m', 'mark', '--mark', m, '-m', 'comment', '--comment', this.table, '-j', 'ACCEPT'];
  }

  /**
   * Which of tsnet's two rules `bin` lacks, given its DOCKER-USER listing (FORWARD is listed here), and where in
   * FORWARD the rule goes: right after dockerd's jump to DOCKER-USER (first when the jump is gone), so DOCKER-USER,
   * users' rules in it included, still decides first, and a host's own final REJECT in FORWARD comes after it.
   */
  private async hookGaps(bin: string, dockerUser: string): Promise<Array<{ chain: HookChain; at: number }>> {
    const has = (listing: string[], chain: HookChain) => listing.some((line) => sameRule(line.split(/\s+/), ['-A', ...this.hookRule(chain)]));
    const lines = (out: string) => out.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('-A '));
    const gaps: Array<{ chain: HookChain; at: number }> = [];
    // iptables prints the mark without zero padding: rules are compared token by token, hex by value.
    if (!has(lines(dockerUser), 'DOCKER-USER')) gaps.push({ chain: 'DOCKER-USER', at: 1 });
    const fwd = await this.exec(bin, ['-w', '-t', 'filter', '-S', 'FORWARD']);
    if (fwd.code !== 0) throw tsnetError('TSN_KERNEL', `${bin} -S FORWARD: ${fwd.stderr.trim()}`);
    const forward = lines(fwd.stdout);
    if (!has(forward, 'FORWARD')) gaps.push({ chain: 'FORWARD', at: forward.findIndex((l) => sameRule(l.split(/\s+/), JUMP)) + 2 });
    return gaps;
  }

  /**
   * dockerd (--iptables=true) jumps from FORWARD to DOCKER-USER first and never flushes it; a mark match there
   * lets tsnet's decisions survive the DROP policy. But dockerd deletes and re-inserts that jump at every network
   * create and at its start (moby's EnsureJumpRule), and what is forwarded in between meets the policy: the same
   * rule in FORWARD itself covers that gap. Absent DOCKER-USER (--iptables=false): nothing to hook.
   */
  private ensureDockerUserHook(): Promise<void> {
    // One check at a time: two (a drift repair beside a link watcher's rebuild) would both find a rule missing and
    // both insert it, and the duplicate outlives removeBase.
    return this.hooking.run(() => this.hookOnce());
  }

  private async hookOnce(): Promise<void> {
    for (const bin of IPTABLES) {
      const exists = await this.exec(bin, ['-w', '-t', 'filter', '-S', 'DOCKER-USER']).catch(() => undefined);
      if (!exists || exists.code !== 0) continue;
      for (const { chain, at } of await this.hookGaps(bin, exists.stdout)) {
        const [name, ...spec] = this.hookRule(chain);
        const args = ['-I', name, String(at), ...spec];
        const ins = await this.exec(bin, ['-w', '-t', 'filter', ...args]);
        if (ins.code !== 0) throw tsnetError('TSN_KERNEL', `${bin} ${args.join(' ')}: ${ins.stderr.trim()}`);
        log.debug('firewall change', { cmd: `${bin} ${args.join(' ')}` });
      }
    }
  }
}
