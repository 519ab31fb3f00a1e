import fs from 'node:fs/promises';
import { z } from 'zod';
import { assertNever, describeChain, tsnetError } from '../errors';
import { log, since } from '../log';
import { elapsed, emit } from '../telemetry/hook';
import { type Firewall, type Kernel, type KernelChange, KernelChangeError, type LinkInfo, type RouteInfo } from './contract';
import { execFileInput } from './exec';
import { safeToken } from './tokens';
import { type BatchFailure, IpBatchSession } from './ip-session';

const IP = 'ip';

/** What the kernel needs of an `ip -batch` process. */
export type BatchRunner = Pick<IpBatchSession, 'run' | 'close' | 'renew'>;

/** One `ip -batch` line from its tokens, each through {@link safeToken}: data can never add a word or a command. */
function ipLine(...tokens: Array<string | number>): string {
  return tokens.map((t) => safeToken(t, 'ip -batch')).join(' ');
}

/**
 * The `ip -batch` lines of one change. Every link tsnet creates is stamped with its owner tag as the link alias, so
 * reconciliation can tell its own links from another tsnet's (or anyone's) even when the names look alike.
 */
function batchLines(c: IpChange, owner: string): string[] {
  const mtu = (m?: number) => (m === undefined ? [] : ['mtu', m]);
  const mac = (a?: string) => (a === undefined ? [] : ['address', a]);
  const stamp = (name: string) => ipLine('link', 'set', 'dev', name, 'alias', owner);
  switch (c.op) {
    case 'bridge.add':
      return [ipLine('link', 'add', 'name', c.name, ...mtu(c.mtu), ...mac(c.mac), 'type', 'bridge'), stamp(c.name)];
    case 'veth.add':
      return [
        ipLine('link', 'add', 'name', c.name, ...mtu(c.mtu), 'type', 'veth', 'peer', 'name', c.peer, ...mtu(c.mtu), ...mac(c.peerMac)),
        stamp(c.name),
        stamp(c.peer),
      ];
    case 'macvlan.add':
      return [ipLine('link', 'add', 'link', c.parent, 'name', c.name, ...mtu(c.mtu), ...mac(c.mac), 'type', 'macvlan', 'mode', c.mode), stamp(c.name)];
    case 'ipvlan.add':
      return [ipLine('link', 'add', 'link', c.parent, 'name', c.name, ...mtu(c.mtu), 'type', 'ipvlan', 'mode', c.mode, c.flag), stamp(c.name)];
    case 'vlan.add':
      return [ipLine('link', 'add', 'link', c.parent, 'name', c.name, ...mtu(c.mtu), 'type', 'vlan', 'id', c.vlanId), stamp(c.name)];
    case 'dummy.add':
      return [ipLine('link', 'add', 'name', c.name, ...mtu(c.mtu), 'type', 'dummy'), stamp(c.name)];
    case 'link.master':
      return [ipLine('link', 'set', 'dev', c.name, 'master', c.master)];
    case 'link.up':
      return [ipLine('link', 'set', 'dev', c.name, 'up')];
    case 'link.del':
      return [ipLine('link', 'del', 'dev', c.name)];
    case 'addr.add':
      // nodad: the gateway address must answer at once, not after IPv6 duplicate address detection (~1 s).
      return [ipLine('addr', 'add', c.cidr, 'dev', c.dev, ...(c.cidr.includes(':') ? ['nodad'] : []))];
    case 'addr.del':
      return [ipLine('addr', 'del', c.cidr, 'dev', c.dev)];
    case 'route.add':
      // ip takes the family from the destination; a route with only a device is on-link.
      return [ipLine('route', 'add', c.dst, 'dev', c.dev)];
    case 'route.del':
      return [ipLine('route', 'del', c.dst, 'dev', c.dev)];
    default:
      return assertNever(c, 'kernel change');
  }
}


type IpChange = Exclude<KernelChange, { op: 'sysctl.set' }>;
type SysctlRendered = { change: Extract<KernelChange, { op: 'sysctl.set' }>; file: string; value: string };
type IpRendered = { change: IpChange; lines: string[] };
/** A change as the text its tool reads. */
type Rendered = SysctlRendered | IpRendered;

/** A sysctl key is a relative path of plain segments: it can only name a file under the sysctl root. */
function sysctlFile(root: string, key: string): string {
  const segments = key.split('/');
  if (segments.some((s) => s === '.' || s === '..')) throw tsnetError('TSN_INTERNAL', `sysctl: refusing key ${JSON.stringify(key.slice(0, 80))}`);
  return `${root}/${segments.map((s) => safeToken(s, 'sysctl key')).join('/')}`;
}

export interface Iproute2Options {
  /** Makes the ip process of each lane (tests pass a stub). */
  newSession?: () => BatchRunner;
  /**
   * Directory sysctl keys are read and written under (default /proc/sys). A managed plugin's own /proc/sys is
   * read-only; it is given the host's /proc mounted elsewhere (plugin/config.json), which is the same host network
   * namespace's values, writable.
   */
  sysctlRoot?: string;
}

/** What `ip -json -details addr show` prints, parsed rather than trusted (another iproute2 may print otherwise). */
const IpAddrJson = z.array(
  z.object({
    ifname: z.string(),
    flags: z.array(z.string()).optional(),
    mtu: z.number(),
    address: z.string().optional(),
    master: z.string().optional(),
    link: z.string().optional(),
    linkinfo: z.object({ info_kind: z.string().optional(), info_data: z.looseObject({ id: z.number().optional() }).optional() }).optional(),
    ifalias: z.string().optional(),
    addr_info: z.array(z.object({ local: z.string(), prefixlen: z.number() })).optional(),
  }),
);

/** What `ip -json route show` prints. */
const IpRouteJson = z.array(z.object({ dst: z.string(), dev: z.string().optional(), type: z.string().optional() }));

/** Parses one of ip's JSON outputs; a shape it does not expect is a kernel-layer error naming the command. */
function parseIpJson<T>(schema: z.ZodType<T>, what: string, stdout: string): T {
  const parsed = schema.safeParse(JSON.parse(stdout || '[]'));
  if (!parsed.success) throw tsnetError('TSN_KERNEL', `${what}: unexpected JSON from ip`, parsed.error);
  return parsed.data;
}

/** Kernel operations through iproute2 (a long-lived `ip -batch -` for changes, `ip -json` to read) and sysctl writes. */
export class Iproute2Kernel implements Kernel {
  private readonly session: BatchRunner;
  /** A second ip process for the background lane; created on first use. */
  private lane: Iproute2Kernel | undefined;
  /** Link deletions by either lane so far, and how many this lane's ip has seen (see IpBatchSession.renew). */
  private readonly deletions: { count: number };
  private seenDeletions = 0;
  private readonly sysctlRoot: string;

  /**
   * @param owner tag set as the alias of every link this kernel creates (e.g. `tsnet:tsnet`); see {@link batchLines}.
   */
  constructor(
    readonly firewall: Firewall,
    readonly owner: string,
    private readonly options: Iproute2Options = {},
    private readonly isBackground = false,
    deletions = { count: 0 },
  ) {
    this.session = (options.newSession ?? (() => new IpBatchSession([IP])))();
    this.sysctlRoot = options.sysctlRoot ?? '/proc/sys';
    this.deletions = deletions;
  }

  get background(): Kernel {
    if (this.isBackground) return this;
    this.lane ??= new Iproute2Kernel(this.firewall, this.owner, this.options, true, this.deletions);
    return this.lane;
  }

  close(): void {
    this.session.close();
    this.lane?.close();
  }

  async apply(changes: KernelChange[]): Promise<void> {
    // Rendered up front: a refused token fails the whole list before anything is written.
    const rendered = changes.map((c) => this.render(c));
    // Consecutive ip changes go out as one batch: one round trip to the ip process instead of one per change.
    let batch: IpRendered[] = [];
    let batchStart = 0;
    const flush = async () => {
      if (batch.length > 0) await this.batch(batch, batchStart);
      batch = [];
    };
    for (const [i, r] of rendered.entries()) {
      if ('lines' in r) {
        if (batch.length === 0) batchStart = i;
        batch.push(r);
        continue;
      }
      await flush();
      await this.sysctl(r, i);
    }
    await flush();
  }

  private render(c: KernelChange): Rendered {
    if (c.op === 'sysctl.set') return { change: c, file: sysctlFile(this.sysctlRoot, c.key), value: safeToken(c.value, 'sysctl value') };
    return { change: c, lines: batchLines(c, this.owner) };
  }

  private async batch(items: IpRendered[], offset: number): Promise<void> {
    const lines = items.flatMap((r) => r.lines);
    const changeOfLine = items.flatMap((r, i) => r.lines.map(() => i));
    // The other lane deleted links since this ip last ran: names it knows may now be other links (or none).
    if (this.seenDeletions !== this.deletions.count) await this.session.renew();
    const start = performance.now();
    let failure: BatchFailure | undefined;
    try {
      failure = await this.session.run(lines);
    } catch (err) {
      emit({ kind: 'kernel', step: 'ip.batch', ms: elapsed(start), ok: false });
      throw err;
    }
    emit({ kind: 'kernel', step: 'ip.batch', ms: elapsed(start), ok: !failure });
    const ms = since(start);
    if (items.some((r) => r.change.op === 'link.del')) this.deletions.count++;
    this.seenDeletions = this.deletions.count;
    if (!failure) {
      log.debug('kernel change', { changes: lines, ms });
      return;
    }
    // Someone else may have made a link again under a name this ip knew: the next batch asks afresh.
    if (/No such device|Cannot find device/.test(failure.reason)) await this.session.renew();
    const line = Math.min(Math.max(failure.index, 0), lines.length - 1);
    const i = changeOfLine[line];
    // Past the change's first line the link exists: it must count as applied to be undone (it is not tagged yet).
    const partly = line > changeOfLine.indexOf(i);
    log.debug('kernel change failed', { changes: lines, failed: lines[line], reason: failure.reason, ms });
    throw new KernelChangeError(items[i].change, offset + i, `ip ${lines[line]}: ${failure.reason}`, partly);
  }

  private async sysctl(r: SysctlRendered, index: number): Promise<void> {
    const start = performance.now();
    try {
      await fs.writeFile(r.file, r.value);
      emit({ kind: 'kernel', step: 'sysctl', ms: elapsed(start), ok: true });
      log.debug('kernel change', { sysctl: r.change.key, value: r.value });
    } catch (err) {
      emit({ kind: 'kernel', step: 'sysctl', ms: elapsed(start), ok: false });
      throw new KernelChangeError(r.change, index, `sysctl ${r.change.key}=${r.value}: ${describeChain(err)}`);
    }
  }

  readSysctl(key: string): Promise<string | undefined> {
    return fs.readFile(`${this.sysctlRoot}/${key}`, 'utf8').then((v) => v.trim(), () => undefined);
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
    const start = performance.now();
    const res = await execFileInput(IP, ['-json', '-details', 'addr', 'show', ...filter]);
    emit({ kind: 'kernel', step: 'ip.links', ms: elapsed(start), ok: res.code === 0 });
    if (res.code !== 0) {
      if (missingOk && /does not exist/.test(res.stderr)) return [];
      throw tsnetError('TSN_KERNEL', `ip addr show ${filter.join(' ')}: ${res.stderr.trim()}`);
    }
    const rows = parseIpJson(IpAddrJson, `ip addr show ${filter.join(' ')}`, res.stdout);
    return rows.map((r) => ({
      name: r.ifname,
      kind: r.linkinfo?.info_kind ?? '',
      ...(r.master ? { master: r.master } : {}),
      ...(r.link ? { lower: r.link } : {}),
      ...(r.linkinfo?.info_kind === 'vlan' && r.linkinfo.info_data?.id !== undefined ? { vlanId: r.linkinfo.info_data.id } : {}),
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
    emit({ kind: 'kernel', step: 'ip.routes', ms: elapsed(start), ok: res.code === 0 });
    if (res.code !== 0) throw tsnetError('TSN_KERNEL', `ip route show: ${res.stderr.trim()}`);
    const rows = parseIpJson(IpRouteJson, 'ip route show', res.stdout);
    log.debug('kernel read routes', { count: rows.length, ms: since(start) });
    return rows
      .filter((r) => r.type === undefined || r.type === 'unicast')
      .map((r) => ({ dst: r.dst === 'default' ? (v6 ? '::/0' : '0.0.0.0/0') : withPrefix(r.dst, v6), ...(r.dev ? { dev: r.dev } : {}) }));
  }
}

function withPrefix(dst: string, v6: boolean): string {
  return dst.includes('/') ? dst : `${dst}/${v6 ? 128 : 32}`;
}
