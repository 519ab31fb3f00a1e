/**
 * tsnet at scale, straight on its plugin socket with real veth pairs, the way dockerd calls it (RequestPool +
 * gateway → CreateNetwork; RequestAddress → CreateEndpoint → Join per endpoint; back with Leave → DeleteEndpoint →
 * ReleaseAddress, DeleteNetwork → ReleasePool), each joined container end moved into one namespace standing in for
 * the sandboxes (and given back before the Leave, as a stopped container does):
 *
 *   - SCALE_NETS (10) bridge networks filled round-robin to SCALE_PER_NET (1,000) live endpoints each: CreateEndpoint
 *     and Join latency (client side) over the last SCALE_WINDOW (500) endpoints before each milestone (1k, 5k, 10k),
 *     tsnet's RSS there;
 *   - at 1,000 and at 10,000 live endpoints: kill -9 and restart, time to listening (Plugin.Activate answers) and to
 *     ready (a call needing state answers: reconcile is done), and `docker network connect` + `disconnect` of a running
 *     container, tsnet network vs Docker bridge network, interleaved (dockerd's own connect path at the same host
 *     state: a remote driver's CreateEndpoint cannot be isolated from dockerd's, the whole command can);
 *   - one network filled to the Linux bridge's 1,023 ports, then one more endpoint: the {"Err"} and nothing changed;
 *     the kernel's own limit shown with one more veth put on that bridge by hand ("Exchange full");
 *   - SCALE_MACVLAN (100) macvlan endpoints on one parent (a veth pair the bench creates);
 *   - then everything removed the way dockerd would, and the leak check: no link with tsnet's owner tag, no nft
 *     table, store rows as right after start.
 *
 * One private dockerd (`--iptables=true`) with tsnet as a legacy plugin; the e2e host lock is held for the whole
 * run. Results: bench/results/<date>-scale[-<label>].{json,md}; SCALE_LABEL names the tsnet measured (e.g. "main").
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BUSYBOX_IMAGE, ensureBusyboxImage } from '../test/harness/busybox';
import { type Docker, type Dockerd, startDockerd } from '../test/harness/dockerd';
import { onProcessExit, run, runOk, sleep, waitFor } from '../test/harness/exec';
import { forwardingOn, linksOwnedBy } from '../test/harness/host';
import { ensureBuilt, pluginCall, TsnetProcess, uniquePluginName } from '../test/harness/tsnet';
import { checkAborted } from './lib/abort';
import { envInt, linkHarnessRoot, RESULTS_DIR } from './lib/config';
import { hostFacts, livePid, readRssKiB, storeRowsIn } from './lib/host';
import { holdDockerdLock } from './lib/lock';
import { measureThenTearDown, otherDockerdsSeen, progress, saveResults, setOwnDockerd } from './lib/progress';
import { f, mdTable, ok } from './lib/report';
import { pair, type Pair, r2, stats, type Stats } from './lib/stats';
import { stopAfterAbort, teardownSteps } from './lib/teardown';

const NETS = envInt('SCALE_NETS', 10, 1);
const PER_NET = envInt('SCALE_PER_NET', 1000, 1);
const WINDOW = envInt('SCALE_WINDOW', 500, 1);
const MACVLAN = envInt('SCALE_MACVLAN', 100, 0);
const CONNECT_N = envInt('SCALE_CONNECT_N', 20, 1);
/** SCALE_FULL=0 skips the full network (a quick try of the bench). */
const FULL = envInt('SCALE_FULL', 1, 0) > 0;
const LABEL = process.env.SCALE_LABEL ?? '';
const TOTAL = NETS * PER_NET;
const MILESTONES = [...new Set([1000, 5000, 10000, TOTAL].filter((m) => m <= TOTAL))];
const RESTART_AT = [...new Set([1000, TOTAL].filter((m) => m <= TOTAL))];
/** The most ports a Linux bridge holds (the kernel's BR_MAX_PORTS 1024, port 0 reserved). */
const BRIDGE_PORTS = 1023;
const TARGETS = { p99Ms: 5, rssMiB: 150, listeningS: 0.2, ready1kS: 1, ready10kS: 5 } as const;

/** Private ranges only, off the other benches' 10.210-10.218; no traffic leaves the host. */
const subnetOf = (i: number) => `10.219.${4 * i}.0/22`;
const FULL_SUBNET = '10.219.72.0/21';
const MACVLAN_SUBNET = '10.219.96.0/24';
const CMP = { tsnet: '10.219.100.0/24', docker: '10.219.101.0/24', home: '10.219.102.0/24' } as const;

// ---------------------------------------------------------------------------------------------------------------
// the plugin socket, as dockerd uses it

interface Net {
  id: string;
  poolId: string;
  bridge?: string;
  eps: Ep[];
}

interface Ep {
  id: string;
  address: string;
  joined: boolean;
}

type Timings = Partial<Record<'CreateEndpoint' | 'Join', number[]>>;

class Plugin {
  private seq = 0;
  space = '';
  /** Container ends of joined endpoints not yet moved into the sandbox namespace. */
  private unmoved: string[] = [];

  /** `sandbox`: the namespace standing in for every container (dockerd moves the container end there at Join). */
  constructor(
    readonly socket: string,
    readonly sandbox: string,
  ) {}

  /** Moves the joined container ends into the sandbox namespace, in one `ip -batch`, as dockerd would one by one. */
  async moveJoined(): Promise<void> {
    if (this.unmoved.length === 0) return;
    const input = this.unmoved.map((l) => `link set ${l} netns ${this.sandbox}`).join('\n') + '\n';
    this.unmoved = [];
    await runOk('ip', ['-batch', '-'], { input, timeoutMs: 300_000 });
  }

  async call(method: string, body: unknown): Promise<{ ms: number; body: unknown }> {
    const t0 = performance.now();
    const r = await pluginCall(this.socket, method, body, 600_000);
    const ms = performance.now() - t0;
    if (r.status !== 200) throw new Error(`${method}: HTTP ${r.status}: ${r.raw.slice(0, 300)}`);
    return { ms, body: r.body };
  }

  async init(): Promise<void> {
    const r = (await this.call('IpamDriver.GetDefaultAddressSpaces', {})).body as { LocalDefaultAddressSpace: string };
    this.space = r.LocalDefaultAddressSpace;
  }

  /** Container stop: the sandbox gives every interface back to the host namespace (this process's), names kept. */
  async giveBack(): Promise<void> {
    await this.moveJoined();
    const links = JSON.parse((await runOk('ip', ['-n', this.sandbox, '-json', 'link', 'show'])).stdout) as Array<{ ifname: string }>;
    const names = links.map((l) => l.ifname).filter((n) => n !== 'lo');
    if (names.length === 0) return;
    const input = names.map((l) => `link set ${l} netns ${process.pid}`).join('\n') + '\n';
    await runOk('ip', ['-n', this.sandbox, '-batch', '-'], { input, timeoutMs: 300_000 });
  }

  async createNetwork(subnet: string, options: Record<string, string> = {}): Promise<Net> {
    const id = randomBytes(32).toString('hex');
    const pool = (await this.call('IpamDriver.RequestPool', { AddressSpace: this.space, Pool: subnet, SubPool: '', Options: {}, V6: false })).body as { PoolID: string };
    const gw = subnet.replace(/\.0\/(\d+)$/, '.1');
    const g = (await this.call('IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: gw, Options: { RequestAddressType: 'com.docker.network.gateway' } })).body as { Address: string };
    await this.call('NetworkDriver.CreateNetwork', {
      NetworkID: id,
      Options: { 'com.docker.network.generic': options, 'com.docker.network.enable_ipv6': false },
      IPv4Data: [{ AddressSpace: this.space, Pool: subnet, Gateway: g.Address }],
      IPv6Data: [],
    });
    return { id, poolId: pool.PoolID, eps: [] };
  }

  /** RequestAddress → CreateEndpoint → Join; the two driver calls timed into `timings`. */
  async addEndpoint(net: Net, timings?: Timings): Promise<Ep> {
    checkAborted();
    const a = (await this.call('IpamDriver.RequestAddress', { PoolID: net.poolId, Address: '', Options: {} })).body as { Address: string };
    const ep: Ep = { id: randomBytes(32).toString('hex'), address: a.Address, joined: false };
    const c = await this.call('NetworkDriver.CreateEndpoint', {
      NetworkID: net.id,
      EndpointID: ep.id,
      Interface: { Address: ep.address, AddressIPv6: '', MacAddress: '' },
      Options: {},
    });
    net.eps.push(ep);
    const j = await this.call('NetworkDriver.Join', { NetworkID: net.id, EndpointID: ep.id, SandboxKey: `/var/run/docker/netns/tsnetscale${this.seq++}`, Options: {} });
    ep.joined = true;
    const srcName = (j.body as { InterfaceName?: { SrcName?: string } }).InterfaceName?.SrcName;
    if (srcName) this.unmoved.push(srcName);
    if (this.unmoved.length >= 250) await this.moveJoined();
    timings?.CreateEndpoint?.push(c.ms);
    timings?.Join?.push(j.ms);
    return ep;
  }

  /** Leave → DeleteEndpoint → ReleaseAddress. */
  async removeEndpoint(net: Net, ep: Ep): Promise<void> {
    const ids = { NetworkID: net.id, EndpointID: ep.id };
    if (ep.joined) await this.call('NetworkDriver.Leave', ids);
    await this.call('NetworkDriver.DeleteEndpoint', ids);
    await this.call('IpamDriver.ReleaseAddress', { PoolID: net.poolId, Address: ep.address.replace(/\/\d+$/, '') });
  }

  async removeNetwork(net: Net): Promise<void> {
    for (const ep of [...net.eps].reverse()) {
      await this.removeEndpoint(net, ep);
      net.eps.pop();
    }
    await this.call('NetworkDriver.DeleteNetwork', { NetworkID: net.id });
    await this.call('IpamDriver.ReleasePool', { PoolID: net.poolId });
  }

  async bridgeOf(net: Net, ep: Ep): Promise<string> {
    const info = (await this.call('NetworkDriver.EndpointOperInfo', { NetworkID: net.id, EndpointID: ep.id })).body as { Value?: { bridge?: string } };
    const br = info.Value?.bridge;
    if (!br) throw new Error(`EndpointOperInfo of ${ep.id.slice(0, 12)} names no bridge`);
    return br;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// host

const portsOn = async (bridge: string): Promise<number> => (await runOk('ip', ['-o', 'link', 'show', 'master', bridge])).stdout.split('\n').filter((l) => l.trim() !== '').length;

/** kill -9, then the start timed: spawn → listening (handshake answers) → ready (a call needing state answers). */
async function restartTimed(tsnet: TsnetProcess): Promise<{ listeningS: number; readyS: number }> {
  await tsnet.kill9();
  const t0 = performance.now();
  let listening = NaN;
  const starting = tsnet.start();
  await waitFor(
    async () => {
      if (!fs.existsSync(tsnet.socket)) return false;
      const r = await pluginCall(tsnet.socket, 'Plugin.Activate', {}, 1_000).catch(() => undefined);
      if (r?.status !== 200) return false;
      listening = (performance.now() - t0) / 1000;
      return true;
    },
    600_000,
    () => 'tsnet not listening 600 s after the restart',
    5,
  );
  const probe = { NetworkID: '0'.repeat(64), EndpointID: '0'.repeat(64) };
  const r = await pluginCall(tsnet.socket, 'NetworkDriver.EndpointOperInfo', probe, 600_000);
  const ready = (performance.now() - t0) / 1000;
  if (r.status !== 200) throw new Error(`EndpointOperInfo after restart: HTTP ${r.status} ${r.raw}`);
  await starting;
  return { listeningS: Math.round(listening * 1000) / 1000, readyS: Math.round(ready * 1000) / 1000 };
}

// ---------------------------------------------------------------------------------------------------------------

interface Milestone {
  live: number;
  createEndpoint: Stats;
  join: Stats;
  rssMiB: number;
  restart?: { listeningS: number; readyS: number; rssMiBAfter: number };
  connect?: Pair;
}

interface Results {
  date: string;
  label: string;
  machine: Awaited<ReturnType<typeof hostFacts>> & { nets: number; perNet: number; window: number; macvlan: number; connectN: number };
  durationS: number;
  loadavg: { start: number[]; end: number[] };
  otherDockerdSeen: number;
  fillS: number;
  milestones: Milestone[];
  full?: { ports: number; reply: string; status: number; portsAfter: number; refusedLinkExists: boolean; storeEndpointsBefore: number; storeEndpointsAfter: number; kernel: string };
  macvlan: { n: number; createEndpoint: Stats; join: Stats; children: number };
  cleanup: { s: number; linksLeft: string[]; tablesLeft: string[]; storeBaseline: Partial<Record<string, number>>; storeAfter: Partial<Record<string, number>> };
  leaks: string[];
}

interface Env {
  dockerd?: Dockerd;
  tsnet?: TsnetProcess;
  name?: string;
  stateDir?: string;
  plugin?: Plugin;
  nets: Net[];
  parent?: string;
  sandbox?: string;
}

async function connectPair(docker: Docker): Promise<Pair> {
  const t: number[] = [];
  const d: number[] = [];
  const once = async (net: string, into: number[]) => {
    const t0 = performance.now();
    await docker.docker(['network', 'connect', net, 'scale-home']);
    await docker.docker(['network', 'disconnect', net, 'scale-home']);
    into.push(performance.now() - t0);
  };
  await once('scale-cmp-tsnet', []);
  await once('scale-cmp-docker', []);
  for (let i = 0; i < CONNECT_N; i++) {
    await once('scale-cmp-tsnet', t);
    await once('scale-cmp-docker', d);
  }
  return pair(t, d);
}

/** One network to the bridge's limit, then one endpoint more (refused), then the kernel's own limit by hand. */
async function fillBridge(env: Env, plugin: Plugin, tsnet: TsnetProcess, stateDir: string): Promise<NonNullable<Results['full']>> {
  progress(`one network to the bridge's ${BRIDGE_PORTS} ports, then one more`);
  const fullNet = await plugin.createNetwork(FULL_SUBNET);
  env.nets.push(fullNet);
  for (let i = 0; i < BRIDGE_PORTS; i++) await plugin.addEndpoint(fullNet);
  const bridge = await plugin.bridgeOf(fullNet, fullNet.eps[0]);
  const ports = await portsOn(bridge);
  const epsBefore = storeRowsIn(stateDir).endpoint ?? 0;
  const a = (await plugin.call('IpamDriver.RequestAddress', { PoolID: fullNet.poolId, Address: '', Options: {} })).body as { Address: string };
  const refusedId = randomBytes(32).toString('hex');
  const refused = await pluginCall(tsnet.socket, 'NetworkDriver.CreateEndpoint', {
    NetworkID: fullNet.id,
    EndpointID: refusedId,
    Interface: { Address: a.Address, AddressIPv6: '', MacAddress: '' },
    Options: {},
  });
  // dockerd releases the address of an endpoint that was refused.
  await plugin.call('IpamDriver.ReleaseAddress', { PoolID: fullNet.poolId, Address: a.Address.replace(/\/\d+$/, '') });
  const refusedLinkExists = (await run('ip', ['link', 'show', 'dev', `tsv${refusedId.slice(0, 12)}`])).code === 0;
  // The kernel's own limit: one more veth on that bridge by hand.
  const probe = `tssp${randomBytes(4).toString('hex')}`;
  await runOk('ip', ['link', 'add', probe, 'type', 'veth', 'peer', 'name', `${probe}p`]);
  const kernel = await run('ip', ['link', 'set', probe, 'master', bridge]);
  await runOk('ip', ['link', 'del', probe]);
  const full: NonNullable<Results['full']> = {
    ports,
    status: refused.status,
    reply: refused.raw.slice(0, 400),
    portsAfter: await portsOn(bridge),
    refusedLinkExists,
    storeEndpointsBefore: epsBefore,
    storeEndpointsAfter: storeRowsIn(stateDir).endpoint ?? 0,
    kernel: kernel.code === 0 ? 'accepted (the limit is not the kernel\'s)' : kernel.stderr.trim(),
  };
  progress(`full bridge: ${ports} ports; endpoint ${ports + 1}: HTTP ${refused.status} ${refused.raw.slice(0, 160)}; kernel: ${full.kernel}`);

  return full;
}

async function measure(env: Env, started: Date, loadStart: number[]): Promise<Results> {
  progress('starting a private dockerd (--iptables=true)');
  const dockerd = await startDockerd({ iptables: true });
  env.dockerd = dockerd;
  setOwnDockerd(dockerd.pid);
  const docker = dockerd.docker;
  await ensureBusyboxImage(docker);
  const name = uniquePluginName();
  env.name = name;
  const stateDir = path.join(dockerd.dir, 'tsnet', 'state');
  env.stateDir = stateDir;
  // Info, not debug: 30,000 calls' debug lines would cost more than the calls. The private dockerd's API, never the
  // host's. The networks made straight on the socket are unknown to that dockerd, so reclaim (rightly) removes them
  // after its grace: the longest grace keeps it out of the run.
  const extraArgs = ['--log-level', 'info', '--docker-socket', dockerd.socket, '--reclaim-grace', '86400'];
  const tsnet = new TsnetProcess({ name, stateDir, logFile: path.join(dockerd.dir, 'tsnet', 'tsnet.log'), extraArgs, readyTimeoutMs: 600_000 });
  env.tsnet = tsnet;
  const socket = tsnet.socket;
  onProcessExit(() => fs.rmSync(socket, { force: true }));
  progress(`starting tsnet as legacy plugin "${name}"`);
  await tsnet.start();
  const mach = { ...(await hostFacts(docker)), nets: NETS, perNet: PER_NET, window: WINDOW, macvlan: MACVLAN, connectN: CONNECT_N };
  const storeBaseline = storeRowsIn(stateDir);
  const sandbox = `tsnetscale${randomBytes(3).toString('hex')}`;
  await runOk('ip', ['netns', 'add', sandbox]);
  env.sandbox = sandbox;
  const plugin = new Plugin(tsnet.socket, sandbox);
  env.plugin = plugin;
  await plugin.init();

  await docker.docker(['network', 'create', '-d', name, '--ipam-driver', name, '--subnet', CMP.tsnet, 'scale-cmp-tsnet']);
  await docker.docker(['network', 'create', '-d', 'bridge', '--subnet', CMP.docker, 'scale-cmp-docker']);
  await docker.docker(['network', 'create', '-d', 'bridge', '--subnet', CMP.home, 'scale-home']);
  await docker.docker(['run', '-d', '--name', 'scale-home', '--network', 'scale-home', BUSYBOX_IMAGE, 'sleep', '86400']);

  for (let i = 0; i < NETS; i++) env.nets.push(await plugin.createNetwork(subnetOf(i)));
  progress(`filling ${NETS} networks round-robin to ${PER_NET} endpoints each (milestones ${MILESTONES.join(', ')})`);
  const milestones: Milestone[] = [];
  const all: Required<Timings> = { CreateEndpoint: [], Join: [] };
  const fill0 = performance.now();
  let pausedMs = 0;
  for (let n = 1; n <= TOTAL; n++) {
    await plugin.addEndpoint(env.nets[(n - 1) % NETS], all);
    if (n % 1000 === 0) progress(`${n} live endpoints (CreateEndpoint last ${f(all.CreateEndpoint[n - 1])} ms)`);
    if (!MILESTONES.includes(n)) continue;
    const p0 = performance.now();
    await plugin.moveJoined();
    const from = Math.max(0, n - WINDOW);
    const m: Milestone = {
      live: n,
      createEndpoint: stats(all.CreateEndpoint.slice(from, n)),
      join: stats(all.Join.slice(from, n)),
      rssMiB: r2(readRssKiB(livePid(tsnet.pid, 'tsnet')) / 1024),
    };
    if (RESTART_AT.includes(n)) {
      progress(`${n}: docker network connect + disconnect, tsnet vs Docker bridge, N=${CONNECT_N}`);
      m.connect = await connectPair(docker);
      progress(`${n}: kill -9 and restart`);
      const rs = await restartTimed(tsnet);
      await sleep(1_000);
      m.restart = { ...rs, rssMiBAfter: r2(readRssKiB(livePid(tsnet.pid, 'tsnet')) / 1024) };
      progress(`${n}: listening ${rs.listeningS} s, ready ${rs.readyS} s`);
    }
    milestones.push(m);
    pausedMs += performance.now() - p0;
  }
  const fillS = r2((performance.now() - fill0 - pausedMs) / 1000);

  const full = FULL ? await fillBridge(env, plugin, tsnet, stateDir) : undefined;

  const mv: Required<Timings> = { CreateEndpoint: [], Join: [] };
  let children = 0;
  if (MACVLAN > 0) {
    progress(`${MACVLAN} macvlan endpoints on one parent`);
    const parent = `tsspar${randomBytes(3).toString('hex')}`;
    await runOk('ip', ['link', 'add', parent, 'type', 'veth', 'peer', 'name', `${parent}p`]);
    env.parent = parent;
    await runOk('ip', ['link', 'set', parent, 'up']);
    await runOk('ip', ['link', 'set', `${parent}p`, 'up']);
    const mnet = await plugin.createNetwork(MACVLAN_SUBNET, { mode: 'macvlan', parent });
    env.nets.push(mnet);
    for (let i = 0; i < MACVLAN; i++) await plugin.addEndpoint(mnet, mv);
    children = (await runOk('ip', ['-o', 'link', 'show', 'type', 'macvlan'])).stdout.split('\n').filter((l) => l.includes(`@${parent}:`)).length;
  }

  progress('removing everything the way dockerd would');
  const c0 = performance.now();
  await plugin.giveBack();
  for (const net of [...env.nets].reverse()) {
    await plugin.removeNetwork(net);
    env.nets.pop();
  }
  await docker.removeAllContainers();
  await docker.removeCustomNetworks();
  const owner = `tsnet:${name}`;
  await waitFor(async () => (await linksOwnedBy(owner)).length === 0, 300_000, () => 'tsnet links still present 300 s after the last network went', 500).catch(() => undefined);
  await waitFor(async () => (await run('nft', ['list', 'table', 'inet', name])).code !== 0, 60_000, () => 'table still there', 500).catch(() => undefined);
  const cleanupS = r2((performance.now() - c0) / 1000);
  const linksLeft = await linksOwnedBy(owner);
  const tablesLeft: string[] = [];
  for (const family of ['inet', 'bridge']) if ((await run('nft', ['list', 'table', family, name])).code === 0) tablesLeft.push(`${family} ${name}`);
  const storeAfter = storeRowsIn(stateDir);
  const leaks = [
    ...(linksLeft.length > 0 ? [`${linksLeft.length} links with tsnet's owner tag (${linksLeft.slice(0, 5).join(', ')})`] : []),
    ...tablesLeft.map((t) => `nft table ${t}`),
    ...[...new Set([...Object.keys(storeBaseline), ...Object.keys(storeAfter)])].filter((k) => (storeBaseline[k] ?? 0) !== (storeAfter[k] ?? 0)).map((k) => `store ${k}: ${storeBaseline[k] ?? 0} → ${storeAfter[k] ?? 0}`),
  ];
  return {
    date: started.toISOString(),
    label: LABEL,
    machine: mach,
    durationS: 0,
    loadavg: { start: loadStart, end: os.loadavg() },
    otherDockerdSeen: 0,
    fillS,
    milestones,
    full,
    macvlan: { n: MACVLAN, createEndpoint: stats(mv.CreateEndpoint), join: stats(mv.Join), children },
    cleanup: { s: cleanupS, linksLeft, tablesLeft, storeBaseline, storeAfter },
    leaks,
  };
}

async function teardown(env: Env): Promise<string[]> {
  const steps = teardownSteps();
  const { errors, step } = steps;
  await stopAfterAbort(steps, env.dockerd, env.tsnet);
  const { tsnet, dockerd, name } = env;
  if (dockerd?.pid !== undefined) {
    await step('remove containers', () => dockerd.docker.removeAllContainers());
    await step('remove networks', () => dockerd.docker.removeCustomNetworks());
  }
  if (tsnet) {
    await step('stop tsnet', () => tsnet.stop());
    await step('remove plugin socket', () => fs.rmSync(tsnet.socket, { force: true }));
  }
  // What a failed run left: tsnet's links by its owner tag, its tables, the macvlan parent.
  if (name) {
    const left = await linksOwnedBy(`tsnet:${name}`);
    if (left.length > 0) {
      errors.push(`left behind, deleted: ${left.length} links`);
      await step('delete left links', () => runOk('ip', ['-batch', '-'], { input: left.map((l) => `link del ${l}`).join('\n') + '\n', timeoutMs: 600_000 }));
    }
    for (const family of ['inet', 'bridge']) {
      if ((await run('nft', ['list', 'table', family, name])).code === 0) {
        errors.push(`left behind, deleted: nft table ${family} ${name}`);
        await run('nft', ['delete', 'table', family, name]);
      }
    }
  }
  const parent = env.parent;
  if (parent) await step(`delete parent ${parent}`, () => run('ip', ['link', 'del', parent]));
  const sandbox = env.sandbox;
  if (sandbox) await step(`delete namespace ${sandbox}`, () => runOk('ip', ['netns', 'del', sandbox]));
  if (dockerd) await step('destroy dockerd', () => dockerd.destroy());
  return errors;
}

// ---------------------------------------------------------------------------------------------------------------
// report

function renderMarkdown(r: Results): string {
  const m = r.machine;
  const out: string[] = [];
  out.push(`# tsnet at scale, ${r.date.slice(0, 10)}${r.label ? ` (${r.label})` : ''}`);
  out.push('');
  out.push(
    `${m.hostname}: ${m.nproc} CPUs (${m.cpu}), ${m.memoryGiB} GiB, kernel ${m.kernel}; dockerd ${m.dockerd}, node ${m.node}; tsnet ${m.tsnetCommit}${r.label ? ` (${r.label})` : ''}. ` +
      `${m.nets} bridge networks × ${m.perNet} endpoints (real veth pairs, filled round-robin; ${r.fillS} s of plugin calls), one network to the bridge limit, ${m.macvlan} macvlan endpoints; ` +
      `${r.durationS.toFixed(0)} s in all.`,
  );
  out.push('');
  out.push(
    `**The machine is shared**: load average ${r.loadavg.start.map((x) => x.toFixed(2)).join(' / ')} at the start, ${r.loadavg.end.map((x) => x.toFixed(2)).join(' / ')} at the end; ` +
      `up to ${r.otherDockerdSeen} other dockerd process(es) seen. The e2e host lock was held for the whole run.`,
  );
  out.push('');
  out.push(`## Latency and memory as N grows (client side, last ${m.window} endpoints before each count)`);
  out.push('');
  out.push(mdTable([
    ['live endpoints', 'CreateEndpoint p50 ms', 'p99 ms', 'Join p50 ms', 'p99 ms', 'RSS MiB', `p99 ≤ ${TARGETS.p99Ms} ms`, `RSS ≤ ${TARGETS.rssMiB} MiB`],
    ...r.milestones.map((x) => [
      String(x.live),
      f(x.createEndpoint.median),
      f(x.createEndpoint.p99),
      f(x.join.median),
      f(x.join.p99),
      f(x.rssMiB),
      ok(Math.max(x.createEndpoint.p99, x.join.p99), TARGETS.p99Ms),
      ok(x.rssMiB, TARGETS.rssMiB),
    ]),
  ]));
  out.push('');
  out.push('## kill -9 and restart');
  out.push('');
  out.push(mdTable([
    ['live endpoints', 'listening s', `≤ ${TARGETS.listeningS} s`, 'ready s', 'target', 'met', 'RSS after MiB'],
    ...r.milestones.flatMap((x) => {
      if (!x.restart) return [];
      const target = x.live <= 1000 ? TARGETS.ready1kS : TARGETS.ready10kS;
      return [[String(x.live), f(x.restart.listeningS), ok(x.restart.listeningS, TARGETS.listeningS), f(x.restart.readyS), `≤ ${target} s`, ok(x.restart.readyS, target), f(x.restart.rssMiBAfter)]];
    }),
  ]));
  out.push('');
  out.push('Listening: from the spawn of `node dist/main.js` (node\'s own start included) until `Plugin.Activate` answers; ready: until a call needing state (EndpointOperInfo) answers, i.e. reconcile is done.');
  out.push('');
  out.push(`## \`docker network connect\` + \`disconnect\` of a running container (wall ms, N=${m.connectN}, interleaved)`);
  out.push('');
  out.push(mdTable([
    ['live tsnet endpoints', 'tsnet median', 'tsnet p95', 'Docker bridge median', 'Docker bridge p95', 'ratio'],
    ...r.milestones.flatMap((x) => (x.connect ? [[String(x.live), f(x.connect.tsnet.median), f(x.connect.tsnet.p95), f(x.connect.docker.median), f(x.connect.docker.p95), x.connect.ratio.toFixed(3)]] : [])),
  ]));
  out.push('');
  out.push('The Docker bridge network has only this container on it; both run on the same host with the same live veths, so the ratio shows what tsnet\'s live endpoints cost dockerd\'s connect path, not Docker\'s bridge at 10,000 containers (which would need 10,000 containers).');
  out.push('');
  out.push('## The bridge port limit');
  out.push('');
  const full = r.full;
  out.push(
    full
      ? `A network filled to ${full.ports} ports on its bridge; endpoint ${full.ports + 1}: HTTP ${full.status}, \`${full.reply.replace(/`/g, "'")}\`. ` +
          `Afterwards: ${full.portsAfter} ports on the bridge, the refused endpoint's veth ${full.refusedLinkExists ? '**exists**' : 'does not exist'}, store endpoints ${full.storeEndpointsBefore} → ${full.storeEndpointsAfter}. ` +
          `One more veth put on that bridge by hand: \`${full.kernel}\`.`
      : 'Not measured (SCALE_FULL=0).',
  );
  out.push('');
  out.push('## macvlan');
  out.push('');
  out.push(`${r.macvlan.n} endpoints on one parent (${r.macvlan.children} macvlan children seen): CreateEndpoint p50 ${f(r.macvlan.createEndpoint.median)} ms, p99 ${f(r.macvlan.createEndpoint.p99)} ms; Join (makes the link) p50 ${f(r.macvlan.join.median)} ms, p99 ${f(r.macvlan.join.p99)} ms.`);
  out.push('');
  out.push('## Cleanup and leaks');
  out.push('');
  out.push(
    `Everything removed through the socket (Leave → DeleteEndpoint → ReleaseAddress, DeleteNetwork → ReleasePool) and the CLI in ${r.cleanup.s} s (background link deletions included). ` +
      (r.leaks.length === 0 ? 'Leaks: none (no link with tsnet\'s owner tag, no nft table, store rows as right after start).' : `Leaks: ${r.leaks.join('; ')}.`),
  );
  out.push('');
  return out.join('\n');
}

async function main(): Promise<void> {
  linkHarnessRoot();
  await ensureBuilt();
  const started = new Date();
  const t0 = performance.now();
  const loadStart = os.loadavg();
  const env: Env = { nets: [] };
  progress('waiting for the e2e host lock');
  const release = await holdDockerdLock('scale bench');
  const restoreForwarding = forwardingOn();
  let results: Results | undefined;
  try {
    results = await measureThenTearDown(t0, () => measure(env, started, loadStart), () => teardown(env));
  } finally {
    restoreForwarding();
    await release();
  }
  if (!results) return;
  results.otherDockerdSeen = otherDockerdsSeen();
  const base = path.join(RESULTS_DIR, `${started.toISOString().slice(0, 10)}-scale${LABEL ? `-${LABEL.replace(/[^A-Za-z0-9_.-]/g, '')}` : ''}`);
  saveResults(base, results, renderMarkdown(results));
  for (const x of results.milestones) {
    console.log(`${x.live}: CreateEndpoint p50/p99 ${f(x.createEndpoint.median)}/${f(x.createEndpoint.p99)} ms, Join ${f(x.join.median)}/${f(x.join.p99)} ms, RSS ${f(x.rssMiB)} MiB${x.restart ? `, restart listening ${x.restart.listeningS} s ready ${x.restart.readyS} s` : ''}`);
  }
  console.log(`leaks: ${results.leaks.length === 0 ? 'none' : results.leaks.join('; ')}`);
  console.log(`results: ${base}.{json,md} (${results.durationS.toFixed(0)} s)`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
