/**
 * The upstream resolvers the forwarder relays to: an explicit list (`--dns-upstream`; `none` is the empty list), or
 * the `nameserver` lines of a resolv.conf, re-read when the file changes. tsnet runs in the host's namespace, so a
 * systemd-resolved stub (127.0.0.53) is used as it is. tsnet's own listeners are left out at every read, so a host
 * whose resolv.conf points at tsnet never makes a forwarding loop.
 */

import fs from 'node:fs/promises';
import { isIP } from 'node:net';
import type { DnsConfig, DnsUpstream } from '../config';
import { errnoCode } from '../errors';
import { log } from '../log';

const logger = log.child({ component: 'dns-upstreams' });

/** glibc uses at most three nameservers (MAXNS); so does tsnet. */
const MAX_NAMESERVERS = 3;
/** How often resolv.conf's stat (mtime, size, inode) is compared at most. */
const DEFAULT_CHECK_INTERVAL_MS = 2000;

/** The nameservers of a resolv.conf text, in order: IPv4 and IPv6 (with `%zone`); comments and options ignored. */
export function parseResolvConf(text: string): DnsUpstream[] {
  const out: DnsUpstream[] = [];
  for (const line of text.split('\n')) {
    // Like glibc: a comment starts a line with '#' or ';'; the address is the word after the keyword, the rest ignored.
    const words = line.trim().split(/\s+/);
    if (words[0] !== 'nameserver' || words.length < 2) continue;
    const address = words[1];
    if (isIP(address) === 0) {
      logger.warn('resolv.conf nameserver is not an IP address; ignored', { nameserver: address.slice(0, 64) });
      continue;
    }
    out.push({ address, port: 53 });
    if (out.length === MAX_NAMESERVERS) break;
  }
  return out;
}

export interface FileStat {
  mtimeMs: number;
  size: number;
  ino: number;
}

export interface UpstreamSourceOptions {
  /** True for an address and port tsnet itself listens on (such an upstream is skipped). */
  isOwnListener: (address: string, port: number) => boolean;
  /** Milliseconds; `Date.now` unless a test injects its clock. */
  now?: () => number;
  checkIntervalMs?: number;
  stat?: (path: string) => Promise<FileStat>;
  readFile?: (path: string) => Promise<string>;
}

/** Where the forwarder reads its upstreams from, at each query. */
export interface Upstreams {
  current(): DnsUpstream[];
}

export class UpstreamSource implements Upstreams {
  private list: DnsUpstream[];
  private lastCheck = -Infinity;
  private seen: FileStat | 'missing' | undefined;
  private refreshing: Promise<void> | undefined;
  private readonly now: () => number;
  private readonly checkIntervalMs: number;
  private readonly stat: (path: string) => Promise<FileStat>;
  private readonly readFile: (path: string) => Promise<string>;

  constructor(
    private readonly config: Pick<DnsConfig, 'upstreams' | 'resolvConf'>,
    private readonly opts: UpstreamSourceOptions,
  ) {
    this.list = config.upstreams === 'resolv.conf' ? [] : config.upstreams;
    this.now = opts.now ?? Date.now;
    this.checkIntervalMs = opts.checkIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS;
    this.stat = opts.stat ?? ((p) => fs.stat(p));
    this.readFile = opts.readFile ?? ((p) => fs.readFile(p, 'utf8'));
  }

  /**
   * The upstreams to try, in order, without tsnet's own listeners. Never waits: when resolv.conf is due for a
   * check, the check runs in the background and a change applies from the next query on.
   */
  current(): DnsUpstream[] {
    if (this.config.upstreams === 'resolv.conf' && this.now() - this.lastCheck >= this.checkIntervalMs) {
      this.refresh().catch(() => undefined);
    }
    return this.list.filter((u) => !this.opts.isOwnListener(u.address, u.port));
  }

  /** Compares resolv.conf's stat with the last one and re-reads it when it changed (one check at a time). */
  refresh(): Promise<void> {
    if (this.config.upstreams !== 'resolv.conf') return Promise.resolve();
    this.refreshing ??= this.check().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  private async check(): Promise<void> {
    this.lastCheck = this.now();
    const file = this.config.resolvConf;
    let st: FileStat | 'missing';
    let text = '';
    try {
      st = await this.stat(file);
      if (this.seen !== 'missing' && this.seen?.mtimeMs === st.mtimeMs && this.seen.size === st.size && this.seen.ino === st.ino) return;
      text = await this.readFile(file);
    } catch (err) {
      st = 'missing';
      if (this.seen === 'missing') return;
      logger.warn('resolv.conf unreadable: no upstreams, forwarded queries get SERVFAIL', { file, errno: errnoCode(err) });
    }
    this.seen = st;
    const list = parseResolvConf(text);
    const changed = list.length !== this.list.length || list.some((u, i) => u.address !== this.list[i].address);
    this.list = list;
    if (changed) logger.info('upstreams from resolv.conf', { file, upstreams: list.map((u) => u.address) });
  }
}
