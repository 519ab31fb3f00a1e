import { tsnetError } from '../errors';
import { log, since } from '../log';
import type { Firewall } from './contract';
import { execFileInput } from './exec';

export const NFT_TABLE = 'tsnet';
const NFT = 'nft';
const IPTABLES = ['iptables', 'ip6tables'] as const;

/**
 * tsnet's firewall: one nftables table (`inet tsnet`) whose chains are static and whose per-network state lives in
 * sets, so adding or removing a network is one element change in one atomic `nft -f` transaction, never a rewrite.
 *
 * In nftables an accept is final only within its own base chain: dockerd's `ip filter FORWARD` (policy DROP when
 * dockerd enabled forwarding itself) still sees the packet. So tsnet marks what it accepts, and keeps exactly one
 * rule in dockerd's supported hook, DOCKER-USER, that accepts that mark.
 */
export class NftFirewall implements Firewall {
  /** The base ruleset and hook are known to be in place (set by this process; reset by removeBase). */
  private baseReady = false;

  constructor(private readonly mark: number) {}

  private get markHex(): string {
    return `0x${this.mark.toString(16).padStart(8, '0')}`;
  }

  /** The static part of the ruleset; idempotent because the chain is flushed and refilled in the same transaction. */
  renderBase(): string {
    return [
      `add table inet ${NFT_TABLE}`,
      `add set inet ${NFT_TABLE} intra { type ifname . ifname; }`,
      // priority filter - 1: runs before dockerd's iptables-nft filter chains on the same hook.
      `add chain inet ${NFT_TABLE} forward { type filter hook forward priority filter - 1; policy accept; }`,
      `flush chain inet ${NFT_TABLE} forward`,
      `add rule inet ${NFT_TABLE} forward iifname . oifname @intra meta mark set meta mark or ${this.markHex}`,
    ].join('\n');
  }

  async ensureBase(): Promise<void> {
    await this.nft(this.renderBase());
    await this.ensureDockerUserHook();
    this.baseReady = true;
  }

  async removeBase(): Promise<void> {
    this.baseReady = false;
    await this.nft(`delete table inet ${NFT_TABLE}`, /No such file or directory/);
    for (const bin of IPTABLES) {
      const del = await execFileInput(bin, ['-w', '-t', 'filter', '-D', ...this.hookRule()]).catch(() => undefined);
      if (del?.code === 0) log.debug('firewall change', { cmd: `${bin} -D ${this.hookRule().join(' ')}` });
    }
  }

  async allowIntraBridge(bridge: string): Promise<void> {
    const element = `add element inet ${NFT_TABLE} intra { "${bridge}" . "${bridge}" }`;
    if (this.baseReady) return this.nft(element);
    // First network since start or since the table was removed: base and element in one transaction.
    await this.nft(`${this.renderBase()}\n${element}`);
    await this.ensureDockerUserHook();
    this.baseReady = true;
  }

  async revokeIntraBridge(bridge: string): Promise<void> {
    // One nft call instead of list-then-delete: an element (or table) already gone counts as removed.
    await this.nft(`delete element inet ${NFT_TABLE} intra { "${bridge}" . "${bridge}" }`, /No such file or directory/);
  }

  async intraBridges(): Promise<string[]> {
    const res = await execFileInput(NFT, ['-j', 'list', 'set', 'inet', NFT_TABLE, 'intra']);
    if (res.code !== 0) return [];
    const doc = JSON.parse(res.stdout) as { nftables: Array<{ set?: { elem?: Array<{ concat: string[] }> } }> };
    const set = doc.nftables.find((o) => o.set)?.set;
    return (set?.elem ?? []).map((e) => e.concat[0]!);
  }

  private async nft(script: string, tolerate?: RegExp): Promise<void> {
    const start = performance.now();
    const res = await execFileInput(NFT, ['-f', '-'], script + '\n');
    if (res.code !== 0 && tolerate?.test(res.stderr)) return;
    if (res.code !== 0) throw tsnetError('TSN_KERNEL', `nft: ${res.stderr.trim()} (script: ${script.replace(/\n/g, '; ')})`);
    log.debug('firewall change', { script, ms: since(start) });
  }

  private hookRule(): string[] {
    const m = `${this.markHex}/${this.markHex}`;
    return ['DOCKER-USER', '-m', 'mark', '--mark', m, '-m', 'comment', '--comment', 'tsnet', '-j', 'ACCEPT'];
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
