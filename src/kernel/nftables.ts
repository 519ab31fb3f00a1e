import { tsnetError } from '../errors';
import { log, since } from '../log';
import type { Firewall, FwNetwork, FwPort } from './contract';
import { execFileInput } from './exec';
import { DEFAULT_TABLE, renderBase, renderFull, renderNetwork, renderPorts } from './firewall-render';

const NFT = 'nft';
const IPTABLES = ['iptables', 'ip6tables'] as const;
const GONE = /No such file or directory/;

/**
 * tsnet's firewall: the table rendered by firewall-render.ts, changed by element adds and deletes in atomic
 * `nft -f` transactions.
 *
 * In nftables an accept is final only within its own base chain: dockerd's `ip filter FORWARD` (policy DROP when
 * dockerd enabled forwarding itself) still sees the packet. So tsnet marks what it accepts, and keeps exactly one
 * rule in dockerd's supported hook, DOCKER-USER, that accepts that mark.
 */
export class NftFirewall implements Firewall {
  /** The base ruleset and hook are known to be in place (set by this process; reset by removeBase). */
  private baseReady = false;

  constructor(
    private readonly mark: number,
    private readonly table = DEFAULT_TABLE,
  ) {}

  private get markHex(): string {
    return `0x${this.mark.toString(16).padStart(8, '0')}`;
  }

  async sync(networks: FwNetwork[], ports: FwPort[]): Promise<void> {
    await this.nft(renderFull(this.mark, networks, ports, this.table));
    await this.ensureDockerUserHook();
    this.baseReady = true;
  }

  async removeBase(): Promise<void> {
    this.baseReady = false;
    await this.nft(`delete table inet ${this.table}`, GONE);
    for (const bin of IPTABLES) {
      const del = await execFileInput(bin, ['-w', '-t', 'filter', '-D', ...this.hookRule()]).catch(() => undefined);
      if (del?.code === 0) log.debug('firewall change', { cmd: `${bin} -D ${this.hookRule().join(' ')}` });
    }
  }

  async addNetwork(n: FwNetwork): Promise<void> {
    await this.add(renderNetwork('add', n, this.table));
  }

  removeNetwork(n: FwNetwork): Promise<void> {
    return this.remove(renderNetwork('delete', n, this.table));
  }

  addPorts(ports: FwPort[]): Promise<void> {
    return this.add(renderPorts('add', ports, this.table));
  }

  removePorts(ports: FwPort[]): Promise<void> {
    return this.remove(renderPorts('delete', ports, this.table));
  }

  /** Adds elements; the first change since start (or since the table went) brings the base in the same transaction. */
  private async add(lines: string[]): Promise<void> {
    if (lines.length === 0) return;
    if (this.baseReady) return this.nft(lines.join('\n'));
    await this.nft([renderBase(this.mark, this.table), ...lines].join('\n'));
    await this.ensureDockerUserHook();
    this.baseReady = true;
  }

  /** Deletes elements as one transaction; if some are already gone, the rest one by one (idempotent removal). */
  private async remove(lines: string[]): Promise<void> {
    if (lines.length === 0) return;
    try {
      await this.nft(lines.join('\n'));
    } catch (err) {
      if (!GONE.test(String((err as Error).message))) throw err;
      for (const line of lines) await this.nft(line, GONE);
    }
  }

  private async nft(script: string, tolerate?: RegExp): Promise<void> {
    const start = performance.now();
    const res = await execFileInput(NFT, ['-f', '-'], script + '\n');
    if (res.code !== 0 && tolerate?.test(res.stderr)) return;
    if (res.code !== 0) throw tsnetError('TSN_KERNEL', `nft: ${res.stderr.trim().split('\n')[0]} (${script.split('\n').length} line script)`, new Error(res.stderr));
    log.debug('firewall change', { script, ms: since(start) });
  }

  private hookRule(): string[] {
    const m = `${this.markHex}/${this.markHex}`;
    // The comment names the table, so two tsnets on one host (each with its own table) own distinct rules.
    return ['DOCKER-USER', '-m', 'mark', '--mark', m, '-m', 'comment', '--comment', this.table, '-j', 'ACCEPT'];
  }

  /**
   * dockerd (--iptables=true) jumps from FORWARD to DOCKER-USER first and never flushes it; a mark match there
   * lets tsnet's decisions survive the DROP policy. Absent chain (--iptables=false): nothing to hook.
   */
  private async ensureDockerUserHook(): Promise<void> {
    const rule = this.hookRule();
    for (const bin of IPTABLES) {
      const exists = await execFileInput(bin, ['-w', '-t', 'filter', '-S', 'DOCKER-USER']).catch(() => undefined);
      if (!exists || exists.code !== 0) continue;
      const check = await execFileInput(bin, ['-w', '-t', 'filter', '-C', ...rule]);
      if (check.code === 0) continue;
      const ins = await execFileInput(bin, ['-w', '-t', 'filter', '-I', ...rule]);
      if (ins.code !== 0) throw tsnetError('TSN_KERNEL', `${bin} -I ${rule.join(' ')}: ${ins.stderr.trim()}`);
      log.debug('firewall change', { cmd: `${bin} -I ${rule.join(' ')}` });
    }
  }
}
