/**
 * A veth "wire" for macvlan tests: one end stands in for a host's NIC (`-o parent=`), the other sits in a namespace
 * standing in for the LAN (a machine with addresses on the network's subnet, optionally behind a switch that
 * reflects frames back out of the port they came in on) or for a second host with its own NIC.
 */
import { randomBytes } from 'node:crypto';
import { onProcessExit, run, runOk, runSync } from './exec';
import type { LinkDetails } from './containers';
import { delNetns, makeNetns } from './host';

export interface WireOptions {
  /** Addresses (CIDR) of the LAN machine on its end. */
  lanAddrs?: string[];
  /** Addresses (CIDR) on the parent end: a host with its own address on the LAN. */
  hostAddrs?: string[];
  /**
   * The LAN end is a port of a bridge in the LAN namespace with hairpin on (a switch reflecting frames back, as
   * 802.1Qbg VEPA expects); the LAN machine's addresses go on that bridge.
   */
  hairpin?: boolean;
  /** The far end goes into this existing namespace (a second host) instead of a fresh LAN namespace. */
  farNs?: string;
}

export interface Wire {
  /** The near end, in the host namespace: give it to the driver as `-o parent=`. */
  parent: string;
  /** The namespace of the far end. */
  farNs: string;
  /** The far end's name in `farNs` (a second host's parent). */
  farIf: string;
  /** Runs a command in `farNs`; its stdout. */
  exec(cmd: string, args: string[], timeoutMs?: number): Promise<string>;
  /** Sends `count` pings from `farNs` to `ip`; how many were answered. */
  pings(ip: string, count?: number, intervalS?: number): Promise<PingStats>;
  /** One ping from `farNs`: answered or not. */
  reaches(ip: string): Promise<boolean>;
  /** Deletes the far namespace (if the wire made it) and both ends; never throws. */
  remove(): Promise<void>;
}

export interface PingStats {
  sent: number;
  received: number;
}

/** Links and namespaces made here, deleted at exit even when a test crashed before its cleanup. */
const liveLinks = new Set<string>();
const liveNs = new Set<string>();
onProcessExit(() => {
  for (const ns of liveNs) runSync('ip', ['netns', 'del', ns]);
  for (const link of liveLinks) runSync('ip', ['link', 'del', link]);
});

/** `e2w` + 6 hex digits: unique per run, 15 characters at most with a suffix, and outside tsnet's `ts` names. */
export function wireTag(): string {
  return `e2w${randomBytes(3).toString('hex')}`;
}

/** Parses busybox/iputils ping's summary line. */
export function pingStats(output: string): PingStats {
  const m = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(output);
  return m ? { sent: Number(m[1]), received: Number(m[2]) } : { sent: 0, received: 0 };
}

/** `count` pings from namespace `ns` (the host namespace when undefined) with busybox's ping. */
export async function pingFrom(ns: string | undefined, ip: string, count = 1, intervalS = 0.2): Promise<PingStats> {
  const args = ['ping', '-c', String(count), '-i', String(intervalS), '-W', '1', ip];
  const timeoutMs = 10_000 + count * (intervalS + 1) * 1000;
  const res = ns === undefined ? await run('/bin/busybox', args, { timeoutMs }) : await run('ip', ['netns', 'exec', ns, '/bin/busybox', ...args], { timeoutMs });
  return pingStats(res.stdout);
}

export async function makeWire(tag: string, opts: WireOptions = {}): Promise<Wire> {
  const parent = `${tag}p`;
  const farIf = opts.farNs ? `${tag}f` : 'eth0';
  const ownNs = opts.farNs === undefined;
  const farNs = opts.farNs ?? `${tag}-lan-${process.pid}`;
  const remove = async (): Promise<void> => {
    if (ownNs) {
      await delNetns(farNs).catch(() => undefined);
      liveNs.delete(farNs);
    }
    await run('ip', ['link', 'del', parent]).catch(() => undefined);
    liveLinks.delete(parent);
  };
  try {
    if (ownNs) {
      await makeNetns(farNs);
      liveNs.add(farNs);
      await runOk('ip', ['-n', farNs, 'link', 'set', 'lo', 'up']);
    }
    await runOk('ip', ['link', 'add', parent, 'type', 'veth', 'peer', 'name', farIf, 'netns', farNs]);
    liveLinks.add(parent);
    for (const a of opts.hostAddrs ?? []) await runOk('ip', ['addr', 'add', a, 'dev', parent]);
    await runOk('ip', ['link', 'set', parent, 'up']);
    let lanDev = farIf;
    if (opts.hairpin) {
      lanDev = 'sw0';
      await runOk('ip', ['-n', farNs, 'link', 'add', lanDev, 'type', 'bridge']);
      await runOk('ip', ['-n', farNs, 'link', 'set', farIf, 'master', lanDev]);
      await runOk('ip', ['-n', farNs, 'link', 'set', farIf, 'type', 'bridge_slave', 'hairpin', 'on']);
      await runOk('ip', ['-n', farNs, 'link', 'set', lanDev, 'up']);
    }
    for (const a of opts.lanAddrs ?? []) await runOk('ip', ['-n', farNs, 'addr', 'add', a, 'dev', lanDev]);
    await runOk('ip', ['-n', farNs, 'link', 'set', farIf, 'up']);
  } catch (err) {
    await remove();
    throw err;
  }
  return {
    parent,
    farNs,
    farIf,
    exec: async (cmd, args, timeoutMs = 15_000) => (await runOk('ip', ['netns', 'exec', farNs, cmd, ...args], { timeoutMs })).stdout,
    pings: (ip, count, intervalS) => pingFrom(farNs, ip, count, intervalS),
    reaches: async (ip) => (await pingFrom(farNs, ip)).received > 0,
    remove,
  };
}

/** {@link LinkDetails} with what macvlan tests read besides. */
export interface LinkDetail extends LinkDetails {
  ifindex: number;
  /** The lower link's ifindex (also when it is in another namespace, where `link` is absent). */
  link_index?: number;
  master?: string;
}

/** Every link of the host namespace (or `netns`), with details. */
export async function allLinkDetails(netns?: string): Promise<LinkDetail[]> {
  const { stdout } = await runOk('ip', [...(netns === undefined ? [] : ['-n', netns]), '-d', '-json', 'link', 'show']);
  return stdout.trim() === '' ? [] : (JSON.parse(stdout) as LinkDetail[]);
}

/** Sorted names of the macvlan links on `parent` in the host namespace (or `netns`). */
export async function macvlanChildren(parent: string, netns?: string): Promise<string[]> {
  return (await allLinkDetails(netns))
    .filter((l) => l.linkinfo?.info_kind === 'macvlan' && l.link === parent)
    .map((l) => l.ifname)
    .sort();
}

/** `ip route show` lines of both families (host namespace, or `netns`), trimmed. */
export async function routes(netns?: string): Promise<string[]> {
  const ns = netns === undefined ? [] : ['-n', netns];
  const out = await Promise.all(['-4', '-6'].map(async (family) => (await runOk('ip', [...ns, family, 'route', 'show'])).stdout));
  return out
    .join('\n')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

/** The device `ip route get ip` picks in the host namespace. */
export async function routeDev(ip: string): Promise<string | undefined> {
  const { stdout } = await runOk('ip', ['-json', 'route', 'get', ip]);
  return (JSON.parse(stdout) as Array<{ dev?: string }>)[0]?.dev;
}
