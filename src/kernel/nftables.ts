import { z } from 'zod';
import { tsnetError } from '../errors';
import { log, since } from '../log';
import type { Firewall, FwFamily, FwNetwork, FwPort, LinkInfo } from './contract';
import { execFileInput, type ExecResult } from './exec';
import { DEFAULT_TABLE, renderBase, renderDockerBridges, renderForwardGuard, renderFull, renderNetwork, renderNoIccPorts, renderPorts } from './firewall-render';
import { isDockerBridge } from './names';

const NFT = 'nft';
const IPTABLES = ['iptables', 'ip6tables'] as const;
/** What nft says when the table, a set or a map (or an element being deleted) does not exist. */
const GONE = /No such file or directory/;

export type ExecFn = (file: string, args: string[], input?: string) => Promise<ExecResult>;

export interface NftFirewallDeps {
  /** Runs nft/iptables (unit tests inject a stub; they never run the real tools). */
  exec?: ExecFn;
  /** The host's links, to find Docker's bridges; without it the dockerbr set stays empty. */
  links?: () => Promise<LinkInfo[]>;
}

/** What `nft -t -j list table` says, as far as {@link NftFirewall.intact} reads it: the chain of each rule. */
const TerseListing = z.object({ nftables: z.array(z.object({ rule: z.object({ chain: z.string() }).optional() })) });

/** The rule count of each chain in a terse JSON listing; undefined when the text is not one. */
function rulesPerChain(text: string): Map<string, number> | undefined {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  const listing = TerseListing.safeParse(json);
  if (!listing.success) return undefined;
  const counts = new Map<string, number>();
  for (const { rule } of listing.data.nftables) if (rule) counts.set(rule.chain, (counts.get(rule.chain) ?? 0) + 1);
  return counts;
}

/** Rules per chain of each of tsnet's tables, as the base renders them ("inet" -> "forward" -> 10). */
function baseRuleCounts(mark: number, table: string): Map<string, Map<string, number>> {
  const counts = new Map<string, Map<string, number>>();
  for (const line of renderBase(mark, table).split('\n')) {
    const [verb, kind, family, , chain] = line.split(' ');
    if (verb !== 'add' || kind !== 'rule') continue;
    const chains = counts.get(family) ?? new Map<string, number>();
    chains.set(chain, (chains.get(chain) ?? 0) + 1);
    counts.set(family, chains);
  }
  return counts;
}

function portKey(p: FwPort): string {
  return `${p.hostIp ?? '*'}/${p.proto}/${p.hostPort}/${p.containerIp.includes(':') ? 6 : 4}`;
}

/**
 * tsnet's firewall: the table rendered by firewall-render.ts, changed by element adds and deletes in atomic
 * `nft -f` transactions.
 *
 * In nftables an accept is final only within its own base chain: dockerd's `ip filter FORWARD` (policy DROP when
 * dockerd enabled forwarding itself) still sees the packet. So tsnet marks what it accepts, and keeps exactly one
 * rule in dockerd's supported hook, DOCKER-USER, that accepts that mark.
 *
 * It keeps in memory what its table holds, so a table deleted behind its back (`nft flush ruleset`, a firewalld
 * reload) is rebuilt whole, in the transaction of the change that found it missing.
 */
export class NftFirewall implements Firewall {
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
    this.exec = deps.exec ?? execFileInput;
  }

  private get markHex(): string {
    return `0x${this.mark.toString(16).padStart(8, '0')}`;
  }

  async sync(networks: FwNetwork[], ports: FwPort[], noIccPorts: string[]): Promise<void> {
    this.networks.clear();
    this.ports.clear();
    this.noIccPorts.clear();
    for (const n of noIccPorts) this.noIccPorts.add(n);
    for (const n of networks) this.networks.set(n.bridge, n);
    for (const p of ports) this.ports.set(portKey(p), p);
    await this.rebuild();
  }

  async removeBase(): Promise<void> {
    this.baseReady = false;
    this.networks.clear();
    this.ports.clear();
    this.noIccPorts.clear();
    // Both tables in one transaction (one nft run); when one is already gone, each on its own.
    await this.remove([`delete table inet ${this.table}`, `delete table bridge ${this.table}`]);
    for (const bin of IPTABLES) {
      const del = await this.exec(bin, ['-w', '-t', 'filter', '-D', ...this.hookRule()]).catch(() => undefined);
      if (del?.code === 0) log.debug('firewall change', { cmd: `${bin} -D ${this.hookRule().join(' ')}` });
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
    await this.add(renderForwardGuard(family, this.table), () => this.guard.delete(family));
  }

  async refreshDockerBridges(): Promise<void> {
    if (!(await this.readDockerBridges())) return;
    // Before the first change there is no table to update; the base brings the set with it.
    if (this.baseReady) await this.add(renderDockerBridges(this.dockerBridges, this.table), () => undefined);
  }

  async intact(): Promise<boolean> {
    for (const [family, want] of baseRuleCounts(this.mark, this.table)) {
      const res = await this.exec(NFT, ['-t', '-j', 'list', 'table', family, this.table]);
      if (res.code !== 0) return false;
      const have = rulesPerChain(res.stdout);
      if (!have) throw tsnetError('TSN_KERNEL', `nft -t -j list table ${family} ${this.table}: output is not nft's JSON listing`);
      for (const [chain, n] of want) if (have.get(chain) !== n) return false;
    }
    for (const bin of IPTABLES) {
      if (!(await this.hasDockerUser(bin))) continue;
      if ((await this.exec(bin, ['-w', '-t', 'filter', '-C', ...this.hookRule()])).code !== 0) return false;
    }
    return true;
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
   * bridges are read from the host first: the table may have been gone for a while.
   */
  private async rebuild(): Promise<void> {
    await this.readDockerBridges();
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

  private hookRule(): string[] {
    const m = `${this.markHex}/${this.markHex}`;
    // The comment names the table, so two tsnets on one host (each with its own table) own distinct rules.
    return ['DOCKER-USER', '-m', 'mark', '--mark', m, '-m', 'comment', '--comment', this.table, '-j', 'ACCEPT'];
  }

  /** Whether dockerd made its DOCKER-USER chain in `bin`'s filter table (a missing binary counts as no). */
  private async hasDockerUser(bin: string): Promise<boolean> {
    const exists = await this.exec(bin, ['-w', '-t', 'filter', '-S', 'DOCKER-USER']).catch(() => undefined);
    return exists?.code === 0;
  }

  /**
   * dockerd (--iptables=true) jumps from FORWARD to DOCKER-USER first and never flushes it; a mark match there
   * lets tsnet's decisions survive the DROP policy. Absent chain (--iptables=false): nothing to hook.
   */
  private async ensureDockerUserHook(): Promise<void> {
    const rule = this.hookRule();
    for (const bin of IPTABLES) {
      if (!(await this.hasDockerUser(bin))) continue;
      const check = await this.exec(bin, ['-w', '-t', 'filter', '-C', ...rule]);
      if (check.code === 0) continue;
      const ins = await this.exec(bin, ['-w', '-t', 'filter', '-I', ...rule]);
      if (ins.code !== 0) throw tsnetError('TSN_KERNEL', `${bin} -I ${rule.join(' ')}: ${ins.stderr.trim()}`);
      log.debug('firewall change', { cmd: `${bin} -I ${rule.join(' ')}` });
    }
  }
}
