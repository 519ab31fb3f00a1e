import fs from 'node:fs/promises';
import { tsnetError } from '../errors';
import { log, since } from '../log';
import { type Firewall, type Kernel, type KernelChange, KernelChangeError, type LinkInfo, type RouteInfo } from './contract';
import { execFileInput } from './exec';
import { IpBatchSession } from './ip-session';

const IP = 'ip';

/**
 * The `ip -batch` lines of one change (tokens joined by spaces: names are validated to contain no whitespace). Every
 * link tsnet creates is stamped with its owner tag as the link alias, so reconciliation can tell its own links from
 * another tsnet's (or anyone's) even when the names look alike.
 */
function batchLines(c: Exclude<KernelChange, { op: 'sysctl.set' }>, owner: string): string[] {
  const mtu = (m?: number) => (m === undefined ? [] : ['mtu', String(m)]);
  const mac = (a?: string) => (a === undefined ? [] : ['address', a]);
  const stamp = (name: string) => `link set dev ${name} alias ${owner}`;
  switch (c.op) {
    case 'bridge.add':
      return [['link', 'add', 'name', c.name, ...mtu(c.mtu), ...mac(c.mac), 'type', 'bridge'].join(' '), stamp(c.name)];
    case 'veth.add':
      return [
        ['link', 'add', 'name', c.name, ...mtu(c.mtu), 'type', 'veth', 'peer', 'name', c.peer, ...mtu(c.mtu), ...mac(c.peerMac)].join(' '),
        stamp(c.name),
        stamp(c.peer),
      ];
    case 'link.master':
      return [`link set dev ${c.name} master ${c.master}`];
    case 'link.up':
      return [`link set dev ${c.name} up`];
    case 'link.del':
      return [`link del dev ${c.name}`];
    case 'addr.add':
      // nodad: the gateway address must answer at once, not after IPv6 duplicate address detection (~1 s).
      return [`addr add ${c.cidr} dev ${c.dev}${c.cidr.includes(':') ? ' nodad' : ''}`];
    case 'addr.del':
      return [`addr del ${c.cidr} dev ${c.dev}`];
  }
}

interface IpAddrJson {
  ifname: string;
  flags?: string[];
  mtu: number;
  address?: string;
  master?: string;
  linkinfo?: { info_kind?: string };
  ifalias?: string;
  addr_info?: Array<{ local: string; prefixlen: number }>;
}

/** Kernel operations through iproute2 (a long-lived `ip -batch -` for changes, `ip -json` to read) and /proc/sys writes. */
export class Iproute2Kernel implements Kernel {
  private readonly session = new IpBatchSession([IP]);
  /** A second ip process for the background lane; created on first use. */
  private lane: Iproute2Kernel | undefined;

  /**
   * @param owner tag set as the alias of every link this kernel creates (e.g. `tsnet:tsnet`); see {@link batchLines}.
   */
  constructor(
    readonly firewall: Firewall,
    readonly owner: string,
    private readonly isBackground = false,
  ) {}

  get background(): Kernel {
    if (this.isBackground) return this;
    this.lane ??= new Iproute2Kernel(this.firewall, this.owner, true);
    return this.lane;
  }

  close(): void {
    this.session.close();
    this.lane?.close();
  }

  async apply(changes: KernelChange[]): Promise<void> {
    let done = 0;
    while (done < changes.length) {
      const first = changes[done]!;
      if (first.op === 'sysctl.set') {
        await this.sysctl(first, done);
        done++;
        continue;
      }
      // Consecutive ip changes go out as one batch: one round trip to the ip process instead of one per change.
      let end = done;
      while (end < changes.length && changes[end]!.op !== 'sysctl.set') end++;
      await this.batch(changes.slice(done, end) as Array<Exclude<KernelChange, { op: 'sysctl.set' }>>, done);
      done = end;
    }
  }

  private async batch(changes: Array<Exclude<KernelChange, { op: 'sysctl.set' }>>, offset: number): Promise<void> {
    const lines: string[] = [];
    const changeOfLine: number[] = [];
    changes.forEach((c, i) => {
      for (const l of batchLines(c, this.owner)) {
        lines.push(l);
        changeOfLine.push(i);
      }
    });
    const start = performance.now();
    const failure = await this.session.run(lines);
    const ms = since(start);
    if (!failure) {
      log.debug('kernel change', { changes: lines, ms });
      return;
    }
    const line = Math.min(Math.max(failure.index, 0), lines.length - 1);
    const i = changeOfLine[line]!;
    log.debug('kernel change failed', { changes: lines, failed: lines[line], reason: failure.reason, ms });
    throw new KernelChangeError(changes[i]!, offset + i, `ip ${lines[line]}: ${failure.reason}`);
  }

  private async sysctl(c: Extract<KernelChange, { op: 'sysctl.set' }>, index: number): Promise<void> {
    const file = `/proc/sys/${c.key}`;
    try {
      await fs.writeFile(file, c.value);
      log.debug('kernel change', { sysctl: c.key, value: c.value });
    } catch (err) {
      throw new KernelChangeError(c, index, `sysctl ${c.key}=${c.value}: ${(err as Error).message}`);
    }
  }

  readSysctl(key: string): Promise<string | undefined> {
    return fs.readFile(`/proc/sys/${key}`, 'utf8').then((v) => v.trim(), () => undefined);
  }

  async links(): Promise<LinkInfo[]> {
    return this.readLinks([]);
  }

  async link(name: string): Promise<LinkInfo | undefined> {
    // Most lookups are for names that do not exist yet: sysfs answers that without spawning ip.
    if (!(await fs.access(`/sys/class/net/${name}`).then(() => true, () => false))) return undefined;
    const all = await this.readLinks(['dev', name], true);
    return all[0];
  }

  private async readLinks(filter: string[], missingOk = false): Promise<LinkInfo[]> {
    const res = await execFileInput(IP, ['-json', '-details', 'addr', 'show', ...filter]);
    if (res.code !== 0) {
      if (missingOk && /does not exist/.test(res.stderr)) return [];
      throw tsnetError('TSN_KERNEL', `ip addr show ${filter.join(' ')}: ${res.stderr.trim()}`);
    }
    const rows = JSON.parse(res.stdout || '[]') as IpAddrJson[];
    return rows.map((r) => ({
      name: r.ifname,
      kind: r.linkinfo?.info_kind ?? '',
      ...(r.master ? { master: r.master } : {}),
      ...(r.ifalias ? { owner: r.ifalias } : {}),
      mtu: r.mtu,
      mac: r.address ?? '',
      up: (r.flags ?? []).includes('UP'),
      addresses: (r.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`),
    }));
  }

  async routes(v6: boolean): Promise<RouteInfo[]> {
    const start = performance.now();
    const res = await execFileInput(IP, [v6 ? '-6' : '-4', '-json', 'route', 'show', 'table', 'all']);
    if (res.code !== 0) throw tsnetError('TSN_KERNEL', `ip route show: ${res.stderr.trim()}`);
    const rows = JSON.parse(res.stdout || '[]') as Array<{ dst: string; dev?: string; type?: string }>;
    log.debug('kernel read routes', { count: rows.length, ms: since(start) });
    return rows
      .filter((r) => r.type === undefined || r.type === 'unicast')
      .map((r) => ({ dst: r.dst === 'default' ? (v6 ? '::/0' : '0.0.0.0/0') : withPrefix(r.dst, v6), ...(r.dev ? { dev: r.dev } : {}) }));
  }
}

function withPrefix(dst: string, v6: boolean): string {
  return dst.includes('/') ? dst : `${dst}/${v6 ? 128 : 32}`;
}
