/**
 * Kernel and host inspection for e2e tests: links, addresses, netns, nftables, mounts, processes,
 * and whether e2e tests can run here at all.
 */
import fs from 'node:fs';
import path from 'node:path';
import { run, runOk } from './exec';

/** One entry of `ip -json link show` (fields tests use; iproute2 prints more). */
export interface LinkInfo {
  ifindex: number;
  ifname: string;
  flags: string[];
  mtu: number;
  operstate: string;
  link_type: string;
  master?: string;
  address?: string;
  /** The link alias; tsnet sets it to `tsnet:<table>` on every link it creates. */
  ifalias?: string;
}

/** One address of `ip -json addr show` (`addr_info` entry). */
export interface AddrInfo {
  family: 'inet' | 'inet6';
  local: string;
  prefixlen: number;
  scope?: string;
}

function netnsArgs(netns: string | undefined): string[] {
  return netns === undefined ? [] : ['-n', netns];
}

/** iproute2 prints nothing at all (not `[]`) for some empty lists. */
function parseJsonArray<T>(text: string): T[] {
  return text.trim() === '' ? [] : (JSON.parse(text) as T[]);
}

/** All links in the host namespace, or in the named netns (`ip netns` name). */
export async function links(netns?: string): Promise<LinkInfo[]> {
  const { stdout } = await runOk('ip', [...netnsArgs(netns), '-json', 'link', 'show']);
  return parseJsonArray<LinkInfo>(stdout);
}

/** Sorted names of links whose name starts with any of `prefixes`. */
export async function linksWithPrefix(prefixes: readonly string[], netns?: string): Promise<string[]> {
  return (await links(netns))
    .map((l) => l.ifname)
    .filter((n) => prefixes.some((p) => n.startsWith(p)))
    .sort();
}

/** Sorted names of the links a tsnet instance created (its owner tag, `tsnet:<table>`, is their alias). */
export async function linksOwnedBy(owner: string, prefix = ''): Promise<string[]> {
  return (await links())
    .filter((l) => l.ifalias === owner && l.ifname.startsWith(prefix))
    .map((l) => l.ifname)
    .sort();
}

/** Sorted names from `ip netns list` (namespaces in /run/netns; dockerd's own live under its exec-root). */
export async function netnsList(): Promise<string[]> {
  const { stdout } = await runOk('ip', ['-json', 'netns', 'list']);
  return parseJsonArray<{ name: string }>(stdout)
    .map((n) => n.name)
    .sort();
}

/** Addresses on `dev` (host namespace, or `netns`). Rejects if the device does not exist. */
export async function addrsOn(dev: string, netns?: string): Promise<AddrInfo[]> {
  const { stdout } = await runOk('ip', [...netnsArgs(netns), '-json', 'addr', 'show', 'dev', dev]);
  return parseJsonArray<{ addr_info?: AddrInfo[] }>(stdout).flatMap((l) => l.addr_info ?? []);
}

/** Creates a named network namespace (`ip netns add`). */
export async function makeNetns(name: string): Promise<void> {
  await runOk('ip', ['netns', 'add', name]);
}

/** Deletes a named network namespace; a missing one is not an error. */
export async function delNetns(name: string): Promise<void> {
  if ((await netnsList()).includes(name)) await runOk('ip', ['netns', 'del', name]);
}

/** True if nftables has table `family name` (e.g. `inet`, `tsnet`). */
export async function nftTableExists(family: string, name: string): Promise<boolean> {
  return (await nftTable(family, name)) !== undefined;
}

/**
 * `nft list table family name`, with counter values zeroed so two listings of an unchanged ruleset compare equal;
 * undefined if the table does not exist.
 */
export async function nftTable(family: string, name: string): Promise<string | undefined> {
  const r = await run('nft', ['list', 'table', family, name]);
  if (r.code !== 0) return undefined;
  return r.stdout.replace(/counter packets \d+ bytes \d+/g, 'counter packets 0 bytes 0');
}

/** What tsnet may leave on the host; compare a snapshot from before a test with one after teardown. */
export interface HostSnapshot {
  /** Sorted names of links starting with `ts` (tsnet's bridges and veths). */
  links: string[];
  /** Listing of nftables table `inet tsnet`, undefined if absent. */
  nftTsnet: string | undefined;
}

export async function snapshotHost(): Promise<HostSnapshot> {
  const [tsLinks, nftTsnet] = await Promise.all([linksWithPrefix(['ts']), nftTable('inet', 'tsnet')]);
  return { links: tsLinks, nftTsnet };
}

/** `\040`-style octal escapes in /proc/self/mountinfo paths. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

function isUnder(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/** Mount points at or under `dir` in this mount namespace, deepest first (the order to unmount them). */
export function mountsUnder(dir: string): string[] {
  const root = path.resolve(dir);
  const points = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => unescapeMountPath(line.split(' ')[4] ?? ''))
    .filter((p) => isUnder(p, root));
  return [...new Set(points)].sort((a, b) => b.split('/').length - a.split('/').length || b.length - a.length);
}

function readlinkOrEmpty(p: string): string {
  try {
    return fs.readlinkSync(p);
  } catch {
    return '';
  }
}

function readOrEmpty(p: string): string {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return '';
  }
}

/** True if `pid` exists and is not a zombie (a zombie still answers kill(pid, 0)). */
export function isLiveProcess(pid: number): boolean {
  const stat = readOrEmpty(`/proc/${pid}/stat`);
  return stat !== '' && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

function procPids(): number[] {
  return fs
    .readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .map(Number)
    .filter((pid) => pid !== process.pid);
}

/** Parent pid from /proc/<pid>/stat (the field after the parenthesised, possibly spaced, command name). */
function parentPid(pid: number): number | undefined {
  const stat = readOrEmpty(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields.length > 1 ? Number(fields[1]) : undefined;
}

/** `roots` plus all their descendants, from one snapshot of the process table. */
function withDescendants(roots: number[], pids: number[]): number[] {
  const children = new Map<number, number[]>();
  for (const pid of pids) {
    const ppid = parentPid(pid);
    if (ppid !== undefined) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  }
  const found = new Set<number>();
  const queue = [...roots];
  for (let pid = queue.pop(); pid !== undefined; pid = queue.pop()) {
    if (found.has(pid)) continue;
    found.add(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return [...found].sort((a, b) => a - b);
}

/**
 * Pids (other than this process) whose command line or cwd refers to a path under `dir`, with all their descendants:
 * what a dockerd using `dir` leaves behind if killed — its containerd, the shims, and the containers under the shims.
 * (A container's own /proc/<pid>/root reads `/` from outside its mount namespace, hence the process tree.)
 */
export function pidsReferencing(dir: string): number[] {
  const root = path.resolve(dir);
  const pids = procPids();
  const direct = pids.filter((pid) => {
    const refs = [...readOrEmpty(`/proc/${pid}/cmdline`).split('\0'), readlinkOrEmpty(`/proc/${pid}/cwd`)];
    return refs.some((r) => r.includes(root));
  });
  return withDescendants(direct, pids);
}

/**
 * Pids whose /proc/<pid>/cgroup names any of `ids` (e.g. docker container ids, whose cgroups are `/docker/<id>`),
 * with their descendants. Finds a container's processes even after its shim is gone.
 */
export function pidsInCgroupsNamed(ids: readonly string[]): number[] {
  if (ids.length === 0) return [];
  const pids = procPids();
  const direct = pids.filter((pid) => {
    const cgroups = readOrEmpty(`/proc/${pid}/cgroup`);
    return ids.some((id) => cgroups.includes(id));
  });
  return withDescendants(direct, pids);
}

// ---- can e2e tests run here ----

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '')
    .split(':')
    .filter((d) => d !== '')
    .some((d) => {
      try {
        fs.accessSync(path.join(d, cmd), fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
}

/** Where dockerd looks for legacy plugin sockets, whatever its --exec-root. */
export const PLUGIN_DIR = '/run/docker/plugins';

let cachedSkipReason: { reason: string | undefined } | undefined;

/**
 * Why e2e tests cannot run on this machine, or undefined if they can:
 * they need root, `dockerd`, `docker`, `ip`, `nft` on PATH, a static busybox, and a writable {@link PLUGIN_DIR}.
 * Creates PLUGIN_DIR if missing (that is part of the check).
 */
export function e2eSkipReason(): string | undefined {
  cachedSkipReason ??= { reason: computeSkipReason() };
  return cachedSkipReason.reason;
}

function computeSkipReason(): string | undefined {
  if (process.platform !== 'linux') return `e2e tests need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'e2e tests need root';
  for (const cmd of ['dockerd', 'docker', 'ip', 'nft', 'tar', 'umount']) {
    if (!onPath(cmd)) return `e2e tests need \`${cmd}\` on PATH`;
  }
  if (!fs.existsSync('/bin/busybox')) return 'e2e tests need /bin/busybox (Debian package busybox-static)';
  try {
    fs.mkdirSync(PLUGIN_DIR, { recursive: true });
    fs.accessSync(PLUGIN_DIR, fs.constants.W_OK);
  } catch (e) {
    return `e2e tests need a writable ${PLUGIN_DIR}: ${(e as Error).message}`;
  }
  return undefined;
}

let skipLogged = false;

/**
 * `describe` for e2e suites: runs them when {@link e2eSkipReason} allows, otherwise registers them with
 * `describe.skip` (so they count as skipped, not passed) and logs the reason once per test file.
 */
export function describeE2E(name: string, fn: () => void): void {
  const reason = e2eSkipReason();
  if (reason === undefined) {
    describe(name, fn);
    return;
  }
  if (!skipLogged) {
    skipLogged = true;
    console.warn(`skipping e2e tests: ${reason}`);
  }
  describe.skip(name, fn);
}

const FORWARDING = ['/proc/sys/net/ipv4/ip_forward', '/proc/sys/net/ipv6/conf/all/forwarding'];

/**
 * Turns IP forwarding on as a Docker host has it (dockerd enables it when it creates docker0; the harness runs dockerd
 * with --bridge=none, which leaves it as it was), so the dockerd suites test tsnet beside a forwarding host. The path
 * where tsnet itself turns forwarding on, and guards it, is tested in a namespace of its own (exposure.test.ts).
 * Returns the function that puts the previous values back.
 */
export function forwardingOn(): () => void {
  const before = FORWARDING.map((file) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim() : undefined));
  for (const file of FORWARDING) if (fs.existsSync(file)) fs.writeFileSync(file, '1');
  return () => {
    FORWARDING.forEach((file, i) => {
      const value = before[i];
      if (value !== undefined) fs.writeFileSync(file, value);
    });
  };
}
