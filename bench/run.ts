/**
 * tsnet benchmark: one run against one private dockerd (default firewall, `--iptables=true`) with tsnet as a legacy
 * plugin on a unique socket, at `--log-level debug` so its log gives per-call and per-step times.
 *
 *   (a) `docker network create` + `rm`: tsnet (driver + IPAM) vs Docker's `bridge`, interleaved
 *   (b) `docker run --rm busybox true` on tsnet / Docker bridge / `--network none`, and the networking share
 *   (c) `docker network connect` + `disconnect` of a running container, tsnet vs Docker bridge
 *   (d) tsnet RSS idle and with 1,000 live endpoints
 *   (e) CreateEndpoint / Join latency (plugin socket, client side) with 10 vs 1,000 live endpoints
 *   (f) where the time goes: tsnet's debug log per plugin call and per kernel step
 *   (g) iperf3 single-stream TCP throughput: container ↔ container, container → host, vs the host's loopback
 *   (h) `docker run -d` publishing 100 ports (Docker: its default userland proxy), and tsnet's ProgramExternalConnectivity
 *
 * Results: bench/results/<date>-<host>.{json,md} and bench/results/latest.md. Knobs (env): BENCH_N (iterations,
 * default 30), BENCH_WARMUP (3), BENCH_E_SAMPLES (100), BENCH_E_LIVE (1000), BENCH_IPERF_SECONDS (5),
 * BENCH_IPERF_REPS (3), BENCH_PORTS_N (10), BENCH_TSNET_ROOT / BENCH_TSNET_LABEL (measure another tsnet tree).
 * See bench/README.md.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { BUSYBOX_IMAGE } from '../test/harness/busybox';
import type { Docker, Dockerd } from '../test/harness/dockerd';
import { run, sleep, spawnDaemon, terminate, waitFor } from '../test/harness/exec';
import { forwardingOn, pidsInCgroupsNamed } from '../test/harness/host';
import { pluginCall, type TsnetProcess } from '../test/harness/tsnet';
import { checkAborted } from './lib/abort';
import { envInt, REPO, RESULTS_DIR } from './lib/config';
import { hostFacts, linkGone, livePid, quiesce, readRssKiB } from './lib/host';
import { iperfArgs, iperfClient, type IperfRun, iperfTimeoutMs, IPERF_MOUNTS } from './lib/iperf';
import { measureThenTearDown, otherDockerdsSeen, progress, saveResults } from './lib/progress';
import { callRows, f, mdTable, ok, okMin, pct, statsRows, textTable } from './lib/report';
import { Session } from './lib/session';
import { groupStats, median, type Pair, pair, r2, ratio, type Stats, stats } from './lib/stats';
import { reviveDaemons, stopAfterAbort, teardownSteps, tsnetAnswers } from './lib/teardown';
import { breakdown, type Breakdown, callInstances, type CommandShare, commandShares, type TsnetLog } from './lib/tsnet-log';

// ---------------------------------------------------------------------------------------------------------------
// configuration

const N = envInt('BENCH_N', 30, 1);
const WARMUP = envInt('BENCH_WARMUP', 3, 0);
const E_SAMPLES = envInt('BENCH_E_SAMPLES', 100, 1);
const E_LIVE_LOW = 10;
/** Unmeasured create/remove cycles before the samples at the low count. */
const E_WARMUP = 10 * WARMUP;
const E_LIVE_HIGH = envInt('BENCH_E_LIVE', 1000, E_LIVE_LOW + 1);
/** (g): seconds per iperf3 measurement (after one omitted second of slow start) and repetitions per path. */
const IPERF_SECONDS = envInt('BENCH_IPERF_SECONDS', 5, 1);
const IPERF_REPS = envInt('BENCH_IPERF_REPS', 3, 1);
/** (h): measured `docker run -d` per driver and port count, after H_WARMUP unmeasured ones (where publication is verified). */
const PORTS_N = envInt('BENCH_PORTS_N', 10, 1);
const H_WARMUP = 1;

/** Private ranges only (10.210-10.219.x); the host's LAN is never touched and no traffic leaves the machine. */
const NET = {
  aTsnet: '10.210.0.0/24',
  aDocker: '10.210.1.0/24',
  bTsnet: '10.210.2.0/24',
  bDocker: '10.210.3.0/24',
  cTsnet: '10.210.4.0/24',
  cDocker: '10.210.5.0/24',
  /** The (c) container lives here: dockerd refuses to connect a `--network none` container to anything. */
  cHome: '10.210.6.0/24',
  eTsnet: '10.211.0.0/16',
  /** (g) and (h): one network per driver; the host's iperf3 servers for container → host listen on the gateways. */
  ghTsnet: '10.216.0.0/24',
  ghDocker: '10.217.0.0/24',
} as const;

const TARGETS = { createRmRatio: 1.0, connectRatio: 1.0, shareRatio: 0.8, p99Growth: 1.2, iperfRatioMin: 0.98, portsRatio: 0.5 } as const;


// ---------------------------------------------------------------------------------------------------------------
// (e): endpoints through the plugin socket, as dockerd makes them

interface Ep {
  id: string;
  /** Host end of the veth pair, from EndpointOperInfo (dockerd asks for it too). */
  hostIf?: string;
  address?: string;
  created: boolean;
  joined: boolean;
}

type Timings = Record<string, number[]>;

class EndpointDriver {
  readonly live = new Map<string, Ep>();
  private seq = 0;

  constructor(
    private readonly socket: string,
    readonly networkId: string,
    readonly poolId: string,
  ) {}

  private ids(ep: Ep): { NetworkID: string; EndpointID: string } {
    return { NetworkID: this.networkId, EndpointID: ep.id };
  }

  private async call(method: string, body: unknown, timings?: Timings): Promise<unknown> {
    const t0 = performance.now();
    const r = await pluginCall(this.socket, method, body, 30_000);
    const ms = performance.now() - t0;
    if (r.status !== 200) throw new Error(`${method}: HTTP ${r.status}: ${r.raw}`);
    if (timings) (timings[method] ??= []).push(ms);
    return r.body;
  }

  /** IpamDriver.RequestAddress → NetworkDriver.CreateEndpoint (address in CIDR form) → NetworkDriver.Join → EndpointOperInfo. */
  async create(timings?: Timings): Promise<Ep> {
    checkAborted();
    const ep: Ep = { id: randomBytes(32).toString('hex'), created: false, joined: false };
    this.live.set(ep.id, ep);
    const a = (await this.call('IpamDriver.RequestAddress', { PoolID: this.poolId, Address: '', Options: {} }, timings)) as { Address: string };
    ep.address = a.Address;
    await this.call(
      'NetworkDriver.CreateEndpoint',
      { NetworkID: this.networkId, EndpointID: ep.id, Interface: { Address: ep.address, AddressIPv6: '', MacAddress: '' }, Options: {} },
      timings,
    );
    ep.created = true;
    await this.call(
      'NetworkDriver.Join',
      { NetworkID: this.networkId, EndpointID: ep.id, SandboxKey: `/var/run/docker/netns/tsnetbench${this.seq++}`, Options: {} },
      timings,
    );
    ep.joined = true;
    const info = (await this.call('NetworkDriver.EndpointOperInfo', this.ids(ep), timings)) as { Value?: { hostInterface?: string } };
    ep.hostIf = info.Value?.hostInterface;
    return ep;
  }

  /** Leave → DeleteEndpoint → ReleaseAddress, for whatever of that the endpoint got to. */
  async remove(ep: Ep, timings?: Timings): Promise<void> {
    if (ep.joined) {
      await this.call('NetworkDriver.Leave', this.ids(ep), timings);
      ep.joined = false;
    }
    if (ep.created) {
      await this.call('NetworkDriver.DeleteEndpoint', this.ids(ep), timings);
      ep.created = false;
    }
    if (ep.address !== undefined) {
      await this.call('IpamDriver.ReleaseAddress', { PoolID: this.poolId, Address: ep.address.split('/')[0] }, timings);
      ep.address = undefined;
    }
    this.live.delete(ep.id);
  }

  async removeAll(): Promise<void> {
    for (const ep of [...this.live.values()].reverse()) await this.remove(ep);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// host facts

async function machine(docker: Docker) {
  const { iperf3, ...host } = await hostFacts(docker);
  return {
    ...host,
    N,
    warmup: WARMUP,
    eSamples: E_SAMPLES,
    eLive: [E_LIVE_LOW, E_LIVE_HIGH],
    iperf3,
    iperfSeconds: IPERF_SECONDS,
    iperfReps: IPERF_REPS,
    portsN: PORTS_N,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// the run

interface Env {
  dockerd: Dockerd;
  docker: Docker;
  tsnet: TsnetProcess;
  name: string;
  log: TsnetLog;
  /** Network ids created by tsnet, for teardown. */
  tsnetNetworks: Set<string>;
  /** Network name → id, for every network the bench created. */
  netIds: Map<string, string>;
  endpoints?: EndpointDriver;
}

async function createNet(env: Env, name: string, driver: 'tsnet' | 'docker', subnet: string): Promise<string> {
  const args = driver === 'tsnet' ? ['-d', env.name, '--ipam-driver', env.name] : ['-d', 'bridge'];
  const id = await env.docker.docker(['network', 'create', ...args, '--subnet', subnet, name]);
  if (driver === 'tsnet') env.tsnetNetworks.add(id);
  env.netIds.set(name, id);
  return id;
}

async function rmNet(env: Env, name: string, id?: string): Promise<void> {
  await env.docker.docker(['network', 'rm', name]);
  if (id) env.tsnetNetworks.delete(id);
  env.netIds.delete(name);
}

/** tsnet's default bridge name for a network (bridgeNameFor in src/kernel/names.ts): `tsbr-` + 10 characters of the id. */
function tsnetBridge(env: Env, netName: string): string {
  const id = env.netIds.get(netName);
  if (!id) throw new Error(`no id recorded for network ${netName}`);
  return `tsbr-${id.slice(0, 10)}`;
}

const noPorts = async (bridge: string): Promise<boolean> => (await run('ip', ['-o', 'link', 'show', 'master', bridge])).stdout.trim() === '';
/** (a) network create + rm, interleaved tsnet/docker, after warm-ups. */
async function benchNetworks(env: Env): Promise<Record<string, unknown>> {
  const t = { create: [] as number[], rm: [] as number[], total: [] as number[], background: [] as number[] };
  const d = { create: [] as number[], rm: [] as number[], total: [] as number[] };
  for (let i = 0; i < WARMUP + N; i++) {
    const measured = i >= WARMUP;
    const phase = measured ? 'a' : 'a-warmup';
    for (const driver of ['tsnet', 'docker'] as const) {
      const name = `bench-a-${driver}-${i}`;
      const subnet = driver === 'tsnet' ? NET.aTsnet : NET.aDocker;
      let id = '';
      const c = await env.log.measure(phase, `${driver} create`, async () => {
        id = await createNet(env, name, driver, subnet);
      });
      const bridge = driver === 'tsnet' ? tsnetBridge(env, name) : '';
      const r = await env.log.measure(phase, `${driver} rm`, () => rmNet(env, name, driver === 'tsnet' ? id : undefined));
      if (driver === 'tsnet') {
        const bg = await quiesce(`deletion of ${bridge}`, () => linkGone(bridge), performance.now());
        if (measured) t.background.push(bg);
      }
      if (measured) {
        const into = driver === 'tsnet' ? t : d;
        into.create.push(c.ms);
        into.rm.push(r.ms);
        into.total.push(c.ms + r.ms);
      }
    }
    if (i === WARMUP - 1 || i === WARMUP + N - 1 || (i - WARMUP + 1) % 10 === 0) progress(`(a) network create+rm ${i + 1}/${WARMUP + N}`);
  }
  await env.log.settle();
  // tsnet's share of each create: the plugin calls dockerd made while the command ran.
  const creates = env.log.windowsOf(['a']).filter((w) => w.label === 'tsnet create');
  const perCreate = creates.map((w) => {
    const calls = callInstances(env.log.linesOf(w));
    return { wall: w.wallMs, plugin: calls.reduce((s, c) => s + c.ms, 0), calls: calls.map((c) => c.call) };
  });
  const split = {
    wall: stats(perCreate.map((p) => p.wall)),
    tsnetPluginCalls: stats(perCreate.map((p) => p.plugin)),
    dockerdAndCli: stats(perCreate.map((p) => p.wall - p.plugin)),
    tsnetSharePct: r2((median(perCreate.map((p) => p.plugin)) / median(perCreate.map((p) => p.wall))) * 100),
    callsPerCreate: perCreate[0]?.calls ?? [],
  };
  return { create: pair(t.create, d.create), rm: pair(t.rm, d.rm), createRm: pair(t.total, d.total), createSplit: split, tsnetBackgroundMs: stats(t.background) };
}

/** (b) `docker run --rm busybox true` on a tsnet network, a Docker bridge network and `--network none`. */
async function benchRun(env: Env): Promise<Record<string, unknown>> {
  const kinds = [
    { key: 'tsnet', net: 'bench-b-tsnet' },
    { key: 'docker', net: 'bench-b-docker' },
    { key: 'none', net: 'none' },
  ] as const;
  const xs: Record<string, number[]> = { tsnet: [], docker: [], none: [] };
  const background: number[] = [];
  const bridge = tsnetBridge(env, 'bench-b-tsnet');
  for (let i = 0; i < WARMUP + N; i++) {
    const measured = i >= WARMUP;
    for (const k of kinds) {
      const r = await env.log.measure(measured ? 'b' : 'b-warmup', `${k.key} run`, () =>
        env.docker.docker(['run', '--rm', '--network', k.net, BUSYBOX_IMAGE, 'true']),
      );
      if (measured) xs[k.key].push(r.ms);
      if (k.key === 'tsnet') {
        const bg = await quiesce(`veth deletion on ${bridge}`, () => noPorts(bridge), performance.now());
        if (measured) background.push(bg);
      }
    }
    if (i === WARMUP - 1 || i === WARMUP + N - 1 || (i - WARMUP + 1) % 10 === 0) progress(`(b) docker run ${i + 1}/${WARMUP + N}`);
  }
  await env.log.settle();
  const none = median(xs.none);
  const tShare = median(xs.tsnet) - none;
  const dShare = median(xs.docker) - none;
  const runs = env.log.windowsOf(['b']).filter((w) => w.label === 'tsnet run');
  const pluginMs = runs.map((w) => callInstances(env.log.linesOf(w)).reduce((s, c) => s + c.ms, 0));
  return {
    tsnet: stats(xs.tsnet),
    docker: stats(xs.docker),
    none: stats(xs.none),
    runRatio: ratio(median(xs.tsnet), median(xs.docker)),
    shareTsnetMs: r2(tShare),
    shareDockerMs: r2(dShare),
    shareRatio: ratio(tShare, dShare),
    tsnetPluginCallsPerRun: stats(pluginMs),
    tsnetBackgroundMs: stats(background),
    callsPerRun: runs[0] ? callInstances(env.log.linesOf(runs[0])).map((c) => c.call) : [],
  };
}

/** (c) connect + disconnect of a running container (living on a third, Docker bridge, network). */
async function benchConnect(env: Env): Promise<Record<string, unknown>> {
  const container = 'bench-c';
  await env.docker.docker(['run', '-d', '--name', container, '--network', 'bench-c-home', BUSYBOX_IMAGE, 'sleep', '86400']);
  const t = { connect: [] as number[], disconnect: [] as number[], total: [] as number[], background: [] as number[] };
  const d = { connect: [] as number[], disconnect: [] as number[], total: [] as number[] };
  const bridge = tsnetBridge(env, 'bench-c-tsnet');
  for (let i = 0; i < WARMUP + N; i++) {
    const measured = i >= WARMUP;
    const phase = measured ? 'c' : 'c-warmup';
    for (const driver of ['tsnet', 'docker'] as const) {
      const net = `bench-c-${driver}`;
      const c = await env.log.measure(phase, `${driver} connect`, () => env.docker.docker(['network', 'connect', net, container]));
      const r = await env.log.measure(phase, `${driver} disconnect`, () => env.docker.docker(['network', 'disconnect', net, container]));
      if (driver === 'tsnet') {
        const bg = await quiesce(`veth deletion on ${bridge}`, () => noPorts(bridge), performance.now());
        if (measured) t.background.push(bg);
      }
      if (measured) {
        const into = driver === 'tsnet' ? t : d;
        into.connect.push(c.ms);
        into.disconnect.push(r.ms);
        into.total.push(c.ms + r.ms);
      }
    }
    if (i === WARMUP - 1 || i === WARMUP + N - 1 || (i - WARMUP + 1) % 10 === 0) progress(`(c) connect+disconnect ${i + 1}/${WARMUP + N}`);
  }
  await env.log.settle();
  await env.docker.docker(['rm', '-f', container]);
  return {
    connect: pair(t.connect, d.connect),
    disconnect: pair(t.disconnect, d.disconnect),
    connectDisconnect: pair(t.total, d.total),
    tsnetBackgroundMs: stats(t.background),
  };
}

/** (e) + the (d) RSS at E_LIVE_HIGH: CreateEndpoint/Join latency with few vs many live endpoints. */
async function benchEndpoints(env: Env, rss: Record<string, number>): Promise<Record<string, unknown>> {
  const netName = 'bench-e';
  const netId = await createNet(env, netName, 'tsnet', NET.eTsnet);
  const socket = env.tsnet.socket;
  // The PoolID dockerd got for the network: an identical RequestPool shares (reference counts) that pool.
  const spaces = (await pluginCall(socket, 'IpamDriver.GetDefaultAddressSpaces', {})).body as { LocalDefaultAddressSpace: string };
  const pool = await pluginCall(socket, 'IpamDriver.RequestPool', { AddressSpace: spaces.LocalDefaultAddressSpace, Pool: NET.eTsnet, SubPool: '', Options: {}, V6: false });
  if (pool.status !== 200) throw new Error(`RequestPool ${NET.eTsnet}: HTTP ${pool.status}: ${pool.raw}`);
  const poolId = (pool.body as { PoolID: string }).PoolID;
  const eps = new EndpointDriver(socket, netId, poolId);
  env.endpoints = eps;
  const background: Record<string, number[]> = {};
  const sampleAt = async (label: string, samples = E_SAMPLES): Promise<Timings> => {
    const timings: Timings = {};
    for (let i = 0; i < samples; i++) {
      const ep = await env.log.measure(`e${label}`, 'create', () => eps.create(timings));
      await env.log.measure(`e${label}`, 'remove', () => eps.remove(ep.value, timings));
      const hostIf = ep.value.hostIf;
      if (hostIf) (background[label] ??= []).push(await quiesce(`deletion of ${hostIf}`, () => linkGone(hostIf), performance.now()));
    }
    await env.log.settle();
    return timings;
  };
  const grow = async (to: number): Promise<number> => {
    const t0 = performance.now();
    const from = eps.live.size;
    while (eps.live.size < to) {
      await eps.create();
      if (eps.live.size % 250 === 0) progress(`(e) ${eps.live.size}/${to} live endpoints`);
    }
    return (performance.now() - t0) / Math.max(1, to - from);
  };

  await grow(E_LIVE_LOW);
  // Warm-up cycles (not reported), so that the low count is not the one paying for JIT and first-use costs.
  await sampleAt(`${E_LIVE_LOW}-warmup`, E_WARMUP);
  progress(`(e) ${E_SAMPLES} samples at ${E_LIVE_LOW} live`);
  const low = await sampleAt(String(E_LIVE_LOW));
  rss[`live${E_LIVE_LOW}`] = readRssKiB(livePid(env.tsnet.pid, 'tsnet'));
  const growMsPerEndpoint = await grow(E_LIVE_HIGH);
  rss[`live${E_LIVE_HIGH}`] = readRssKiB(livePid(env.tsnet.pid, 'tsnet'));
  const vethsOnHost = (await run('ip', ['-o', 'link', 'show', 'master', `tsbr-${netId.slice(0, 10)}`])).stdout.split('\n').filter((l) => l).length;
  progress(`(e) ${E_SAMPLES} samples at ${E_LIVE_HIGH} live (${vethsOnHost} veths on the bridge)`);
  const high = await sampleAt(String(E_LIVE_HIGH));
  rss[`live${E_LIVE_HIGH}AfterSamples`] = readRssKiB(livePid(env.tsnet.pid, 'tsnet'));
  progress(`(e) removing ${eps.live.size} endpoints`);
  const t0 = performance.now();
  const n = eps.live.size;
  await eps.removeAll();
  const removeMsPerEndpoint = (performance.now() - t0) / Math.max(1, n);
  const rel = await pluginCall(socket, 'IpamDriver.ReleasePool', { PoolID: poolId });
  if (rel.status !== 200) throw new Error(`ReleasePool ${poolId}: HTTP ${rel.status}: ${rel.raw}`);
  await rmNet(env, netName, netId);

  const methods = [...new Set([...Object.keys(low), ...Object.keys(high)])];
  const latency = Object.fromEntries(
    methods.map((m) => {
      const l = stats(low[m] ?? []);
      const h = stats(high[m] ?? []);
      return [m, { [`live${E_LIVE_LOW}`]: l, [`live${E_LIVE_HIGH}`]: h, p99Growth: ratio(h.p99, l.p99), p50Growth: ratio(h.median, l.median) }];
    }),
  );
  // Server-side view of the same samples (tsnet's own "plugin call" ms), to separate HTTP/client overhead.
  const server = (phase: string) => {
    const inst = env.log.windowsOf([phase]).flatMap((w) => callInstances(env.log.linesOf(w)));
    return groupStats(inst, (i) => i.call, (i) => i.ms);
  };
  const kernel = (phase: string) => breakdown(env.log.windowsOf([phase]).flatMap((w) => env.log.linesOf(w)));
  return {
    latency,
    serverSide: { [`live${E_LIVE_LOW}`]: server(`e${E_LIVE_LOW}`), [`live${E_LIVE_HIGH}`]: server(`e${E_LIVE_HIGH}`) },
    breakdown: { [`live${E_LIVE_LOW}`]: kernel(`e${E_LIVE_LOW}`), [`live${E_LIVE_HIGH}`]: kernel(`e${E_LIVE_HIGH}`) },
    tsnetBackgroundMs: Object.fromEntries(Object.entries(background).filter(([k]) => !k.endsWith('warmup')).map(([k, v]) => [`live${k}`, stats(v)])),
    growMsPerEndpoint: r2(growMsPerEndpoint),
    removeMsPerEndpoint: r2(removeMsPerEndpoint),
    vethsOnBridgeAtHigh: vethsOnHost,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// (g) iperf3 throughput

/** Server ports: in the server containers, and of the host's servers (gateway of each network, loopback). */
const IPERF_PORT = { container: 5201, hostTsnet: 5211, hostDocker: 5212, loopback: 5213 } as const;

/** The host's iperf3 servers started by the bench (stopped at the end of (g) and, whatever happened, in teardown). */
const hostIperf: ChildProcess[] = [];
/** Every pid of those, and the ids of the (g) containers (iperf3 servers, clients): what teardown checks is gone. */
const iperfPids: number[] = [];
const iperfContainers: string[] = [];

async function startHostIperf(dir: string, address: string, port: number): Promise<void> {
  const child = spawnDaemon('iperf3', ['-s', '-B', address, '-p', String(port)], { logFile: path.join(dir, `iperf3-${port}.log`) });
  hostIperf.push(child);
  if (child.pid !== undefined) iperfPids.push(child.pid);
  await waitFor(
    async () => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`iperf3 -s -B ${address} -p ${port} exited: ${fs.readFileSync(path.join(dir, `iperf3-${port}.log`), 'utf8').trim()}`);
      return (await run('ss', ['-ltnH', `sport = :${port}`])).stdout.includes(address);
    },
    10_000,
    () => `iperf3 -s on ${address}:${port} not listening after 10 s`,
  );
}

async function stopHostIperf(): Promise<void> {
  for (let p = hostIperf.pop(); p; p = hostIperf.pop()) await terminate(p, 3_000);
}

/** Live iperf3 processes this run started: the host's servers, and any in the (g) containers' cgroups. */
function benchIperfPids(): number[] {
  const isIperf = (pid: number) => {
    try {
      return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'iperf3';
    } catch {
      return false; // exited
    }
  };
  return [...new Set([...iperfPids, ...pidsInCgroupsNamed(iperfContainers)])].filter(isIperf);
}

async function containerIp(env: Env, container: string, network: string): Promise<string> {
  return env.docker.docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, container]);
}

/** First address of a subnet: the gateway dockerd asks both drivers for (tsnet puts it on its bridge). */
const gatewayOf = (subnet: string) => subnet.replace(/\.0\/\d+$/, '.1');

type GPath = 'c2c' | 'c2h';

/**
 * (g) single-stream TCP throughput with iperf3, tsnet vs Docker's bridge, interleaved per repetition after one
 * unmeasured second per path: container → container on one network, container → host (the host's server on the
 * network's gateway address), and the host's loopback as the ceiling. Networks stay for (h).
 */
async function benchIperf(env: Env): Promise<Record<string, unknown>> {
  const drivers = ['tsnet', 'docker'] as const;
  const subnet = { tsnet: NET.ghTsnet, docker: NET.ghDocker };
  const hostPort = { tsnet: IPERF_PORT.hostTsnet, docker: IPERF_PORT.hostDocker };
  const server: Record<string, string> = {};
  for (const d of drivers) {
    const net = `bench-gh-${d}`;
    await createNet(env, net, d, subnet[d]);
    iperfContainers.push(
      await env.docker.docker(['run', '-d', '--name', `bench-g-srv-${d}`, '--network', net, ...IPERF_MOUNTS, BUSYBOX_IMAGE, '/iperf3', '-s', '-p', String(IPERF_PORT.container)]),
      await env.docker.docker(['run', '-d', '--name', `bench-g-cli-${d}`, '--network', net, ...IPERF_MOUNTS, BUSYBOX_IMAGE, 'sleep', '86400']),
    );
    server[d] = await containerIp(env, `bench-g-srv-${d}`, net);
    await startHostIperf(env.dockerd.dir, gatewayOf(subnet[d]), hostPort[d]);
  }
  await startHostIperf(env.dockerd.dir, '127.0.0.1', IPERF_PORT.loopback);
  const measure = (which: GPath | 'loopback', d: 'tsnet' | 'docker' | undefined, seconds: number): Promise<IperfRun> => {
    if (which === 'loopback') {
      return iperfClient('loopback', () => run('iperf3', iperfArgs('127.0.0.1', IPERF_PORT.loopback, seconds), { timeoutMs: iperfTimeoutMs(seconds) }));
    }
    if (d === undefined) throw new Error(`iperf3 ${which} needs a driver`);
    const [addr, port] = which === 'c2c' ? [server[d], IPERF_PORT.container] : [gatewayOf(subnet[d]), hostPort[d]];
    return iperfClient(`${d} ${which} (bench-g-cli-${d} → ${addr}:${port})`, () =>
      env.docker.dockerTry(['exec', `bench-g-cli-${d}`, '/iperf3', ...iperfArgs(addr, port, seconds)], { timeoutMs: iperfTimeoutMs(seconds) }),
    ).catch(async (err: unknown) => {
      // What the client saw: its links, addresses and routes. (A tsnet container without eth0 has lost its veth, e.g.
      // to a tsnet older than 598be43 starting on this host, which deleted every tsnet-named link; see bench/README.md.)
      const seen = await env.docker.dockerTry(['exec', `bench-g-cli-${d}`, 'sh', '-c', 'ip -o link; ip -o addr; ip route']);
      throw new Error(`${(err as Error).message}\n--- in bench-g-cli-${d} ---\n${seen.stdout.trim()}${seen.stderr.trim()}`);
    });
  };
  // Warm-up: ARP, conntrack, page cache of the binaries; not reported.
  await measure('loopback', undefined, 1);
  for (const p of ['c2c', 'c2h'] as const) for (const d of drivers) await measure(p, d, 1);
  const runs: Record<string, IperfRun[]> = {};
  const push = (k: string, r: IperfRun) => (runs[k] ??= []).push(r);
  for (let i = 0; i < IPERF_REPS; i++) {
    push('loopback', await measure('loopback', undefined, IPERF_SECONDS));
    // Alternating order (tsnet first, then Docker first, ...), so neither driver always follows the other.
    const order = i % 2 === 0 ? drivers : ([...drivers].reverse());
    for (const p of ['c2c', 'c2h'] as const) for (const d of order) push(`${p}.${d}`, await measure(p, d, IPERF_SECONDS));
    progress(`(g) iperf3 repetition ${i + 1}/${IPERF_REPS}: ${Object.entries(runs).map(([k, v]) => `${k} ${v[v.length - 1].gbps.toFixed(2)}`).join(', ')} Gbit/s`);
  }
  await stopHostIperf();
  for (const d of drivers) await env.docker.docker(['rm', '-f', `bench-g-srv-${d}`, `bench-g-cli-${d}`]);
  const gbps = (k: string) => stats(runs[k].map((r) => r.gbps));
  const loop = gbps('loopback');
  const paths = Object.fromEntries(
    (['c2c', 'c2h'] as const).map((p) => {
      const t = gbps(`${p}.tsnet`);
      const d = gbps(`${p}.docker`);
      return [p, { tsnet: t, docker: d, ratio: ratio(t.median, d.median), tsnetOfLoopback: ratio(t.median, loop.median), dockerOfLoopback: ratio(d.median, loop.median) }];
    }),
  );
  return { loopback: loop, paths, runs, seconds: IPERF_SECONDS, reps: IPERF_REPS };
}

// ---------------------------------------------------------------------------------------------------------------
// (h) 100 published ports

const H_PORTS = 100;
/** Host port blocks (tsnet, Docker: never the same) → container ports CPORT_BASE…+99; httpd answers on the first. */
const H_HOST_BASE = { tsnet: 20000, docker: 20200 } as const;
const H_CPORT_BASE = 10000;
const H_CMD = ['sh', '-c', `echo tsnet-bench > /var/www/index.html && exec httpd -f -p ${H_CPORT_BASE} -h /var/www`];

function publishArgs(hostBase: number, n: number): string[] {
  return Array.from({ length: n }, (_, i) => ['-p', `${hostBase + i}:${H_CPORT_BASE + i}`]).flat();
}

/** One HTTP GET from the host (Node's client); the body, or undefined on any error. */
function httpGet(url: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: 2_000, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(res.statusCode === 200 ? body.trim() : undefined));
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(undefined));
  });
}

/** Polls `url` until httpd answers (it starts right after `docker run -d` returns); ms until then. */
async function verifyPublished(url: string): Promise<number> {
  const t0 = performance.now();
  await waitFor(async () => (await httpGet(url)) === 'tsnet-bench', 15_000, () => `published port ${url} did not answer within 15 s`, 100);
  return r2(performance.now() - t0);
}

/** Processes named `comm` whose parent is `ppid` (dockerd's docker-proxy children). */
function childrenNamed(ppid: number, comm: string): number {
  let n = 0;
  for (const pid of fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const m = /^\d+ \((.*)\) \S+ (\d+)/.exec(stat);
      if (m && m[1] === comm && Number(m[2]) === ppid) n++;
    } catch {
      // exited meanwhile
    }
  }
  return n;
}

/** Listening TCP sockets on host ports lo…hi (anyone's). */
async function listenersIn(lo: number, hi: number): Promise<number> {
  const out = (await run('ss', ['-ltnH', `( sport >= :${lo} and sport <= :${hi} )`])).stdout;
  return out.split('\n').filter((l) => l.trim() !== '').length;
}

/**
 * (h) `docker run -d` with 100 `-p HOST:CPORT` on the (g) networks, tsnet vs Docker's bridge (default userland
 * proxy), and the same run without ports, interleaved; every container is removed (timed too) before the next.
 * The first (unmeasured) run per driver checks that a published port answers from the host.
 */
async function benchPorts(env: Env): Promise<Record<string, unknown>> {
  const drivers = ['tsnet', 'docker'] as const;
  const subnet = { tsnet: NET.ghTsnet, docker: NET.ghDocker };
  const bridge = tsnetBridge(env, 'bench-gh-tsnet');
  const xs: Record<string, number[]> = {};
  const push = (k: string, v: number) => (xs[k] ??= []).push(v);
  const verified: Record<string, Record<string, number>> = {};
  const proxies: Record<string, number> = {};
  const iptablesRules: Record<string, number> = {};
  const background: number[] = [];
  for (const d of drivers) {
    const busy = await listenersIn(H_HOST_BASE[d], H_HOST_BASE[d] + H_PORTS - 1);
    if (busy > 0) throw new Error(`(h): ${busy} host ports in ${H_HOST_BASE[d]}-${H_HOST_BASE[d] + H_PORTS - 1} are already in use`);
  }
  for (let i = 0; i < H_WARMUP + PORTS_N; i++) {
    const measured = i >= H_WARMUP;
    const phase = measured ? 'h' : 'h-warmup';
    for (const n of [H_PORTS, 0]) {
      for (const d of drivers) {
        const name = `bench-h-${d}`;
        const label = `run -d, ${n} ports`;
        const r = await env.log.measure(phase, `${d} ${label}`, () =>
          env.docker.docker(['run', '-d', '--name', name, '--network', `bench-gh-${d}`, ...publishArgs(H_HOST_BASE[d], n), BUSYBOX_IMAGE, ...H_CMD]),
        );
        if (measured) push(`${d}.${label}`, r.ms);
        if (i === 0 && n === H_PORTS) {
          // Working publications: from the host to 127.0.0.1 and to the gateway address (a host address).
          verified[d] = {};
          for (const host of ['127.0.0.1', gatewayOf(subnet[d])]) {
            verified[d][`http://${host}:${H_HOST_BASE[d]}/`] = await verifyPublished(`http://${host}:${H_HOST_BASE[d]}/`);
          }
          proxies[d] = childrenNamed(livePid(env.dockerd.pid, 'dockerd'), 'docker-proxy');
          // Docker's iptables rules for the container (host-wide tables; its address is in each of them).
          const ip = await containerIp(env, name, `bench-gh-${d}`);
          const saved = (await run('iptables-save', [])).stdout.split('\n');
          iptablesRules[d] = saved.filter((l) => l.startsWith('-A ') && (l.includes(` ${ip}/32 `) || l.includes(` ${ip}:`) || l.includes(`--to-destination ${ip}`))).length;
          progress(
            `(h) ${d}: published port answers (${Object.entries(verified[d]).map(([u, ms]) => `${u} after ${ms} ms`).join(', ')}); ` +
              `${proxies[d]} docker-proxy processes, ${iptablesRules[d]} iptables rules naming ${ip}`,
          );
        }
        const rm = await env.log.measure(phase, `${d} rm -f, ${n} ports`, () => env.docker.docker(['rm', '-f', name]));
        if (measured) push(`${d}.rm -f, ${n} ports`, rm.ms);
        if (d === 'tsnet') {
          const bg = await quiesce(`veth deletion on ${bridge}`, () => noPorts(bridge), performance.now());
          if (measured && n === H_PORTS) background.push(bg);
        }
        if (n > 0) {
          const lo = H_HOST_BASE[d];
          await waitFor(async () => (await listenersIn(lo, lo + n - 1)) === 0, 10_000, () => `${d}: host ports ${lo}-${lo + n - 1} still held 10 s after docker rm -f`, 20);
        }
      }
    }
    progress(`(h) run -d with ${H_PORTS} ports ${i + 1}/${H_WARMUP + PORTS_N}`);
  }
  await env.log.settle();
  // tsnet's side, from its log: the calls dockerd made while `docker run -d` (100 ports) ran.
  const runs = env.log.windowsOf(['h']).filter((w) => w.label === `tsnet run -d, ${H_PORTS} ports`);
  const pec = runs.flatMap((w) => callInstances(env.log.linesOf(w)).filter((c) => c.call === 'NetworkDriver.ProgramExternalConnectivity' && !c.failed));
  const rms = env.log.windowsOf(['h']).filter((w) => w.label === `tsnet rm -f, ${H_PORTS} ports`);
  const revoke = rms.flatMap((w) => callInstances(env.log.linesOf(w)).filter((c) => c.call === 'NetworkDriver.RevokeExternalConnectivity' && !c.failed));
  const med = (k: string) => median(xs[k]);
  const shareT = med(`tsnet.run -d, ${H_PORTS} ports`) - med('tsnet.run -d, 0 ports');
  const shareD = med(`docker.run -d, ${H_PORTS} ports`) - med('docker.run -d, 0 ports');
  const hLines = env.log.windowsOf(['h']).flatMap((w) => env.log.linesOf(w));
  return {
    run100: pair(xs[`tsnet.run -d, ${H_PORTS} ports`], xs[`docker.run -d, ${H_PORTS} ports`]),
    run0: pair(xs['tsnet.run -d, 0 ports'], xs['docker.run -d, 0 ports']),
    rm100: pair(xs[`tsnet.rm -f, ${H_PORTS} ports`], xs[`docker.rm -f, ${H_PORTS} ports`]),
    rm0: pair(xs['tsnet.rm -f, 0 ports'], xs['docker.rm -f, 0 ports']),
    publishShareTsnetMs: r2(shareT),
    publishShareDockerMs: r2(shareD),
    publishShareRatio: ratio(shareT, shareD),
    programExternalConnectivity: {
      total: stats(pec.map((c) => c.ms)),
      exec: stats(pec.map((c) => c.execMs)),
      store: stats(pec.map((c) => c.storeMs)),
      other: stats(pec.map((c) => c.ms - c.execMs - c.storeMs)),
    },
    revokeExternalConnectivity: stats(revoke.map((c) => c.ms)),
    commands: commandShares(env.log, ['h']),
    breakdown: breakdown(hLines),
    verified,
    dockerProxies: proxies,
    iptablesRules,
    tsnetBackgroundMs: stats(background),
    ports: H_PORTS,
    hostPorts: Object.fromEntries(drivers.map((d) => [d, `${H_HOST_BASE[d]}-${H_HOST_BASE[d] + H_PORTS - 1}`])),
    containerPorts: `${H_CPORT_BASE}-${H_CPORT_BASE + H_PORTS - 1}`,
  };
}

/** Every step runs even if an earlier one failed; errors are collected. */
async function teardown(env: Partial<Env>, dockerd: Dockerd | undefined, tsnet: TsnetProcess | undefined): Promise<string[]> {
  const steps = teardownSteps();
  const { errors, step } = steps;
  await stopAfterAbort(steps, dockerd, tsnet);
  // (g)'s iperf3 servers on the host (those in containers go with the containers).
  await step('stop the host\'s iperf3 servers', () => stopHostIperf());
  await reviveDaemons(steps, dockerd, tsnet, Boolean(env.tsnetNetworks?.size || env.endpoints?.live.size));
  if (tsnet && env.endpoints && env.endpoints.live.size > 0) {
    const eps = env.endpoints;
    await step(`remove ${eps.live.size} endpoints`, () => eps.removeAll());
    await step('release pool', () => pluginCall(tsnet.socket, 'IpamDriver.ReleasePool', { PoolID: eps.poolId }));
  }
  if (dockerd?.pid !== undefined) {
    await step('remove containers', () => dockerd.docker.removeAllContainers());
    await step('remove networks', () => dockerd.docker.removeCustomNetworks());
  }
  if (tsnet && (await tsnetAnswers(tsnet))) {
    // tsnet deletes links in the background (a stop leaves the rest to its next start); let it finish first.
    await step('wait for tsnet\'s background deletions', () =>
      waitFor(async () => !/: ts(br-|v)/.test((await run('ip', ['-o', 'link', 'show'])).stdout), 120_000, () => 'links still present after 120 s', 200),
    );
  }
  if (tsnet) {
    await step('stop tsnet', () => tsnet.stop());
    await step('remove plugin socket', () => fs.rmSync(tsnet.socket, { force: true }));
  }
  // Last resort for a tsnet that could not clean up: its links, by the names it derives from the ids.
  const names = [
    ...[...(env.tsnetNetworks ?? [])].map((id) => `tsbr-${id.slice(0, 10)}`),
    ...[...(env.endpoints?.live.keys() ?? [])].map((id) => `tsv${id.slice(0, 12)}`),
  ];
  const leftover: string[] = [];
  for (const n of names) {
    await step(`ip link del ${n}`, async () => {
      if ((await run('ip', ['link', 'del', 'dev', n])).code === 0) leftover.push(n);
    });
  }
  if (leftover.length > 0) {
    errors.push(`left behind by tsnet, deleted: ${leftover.length} links (${leftover.slice(0, 3).join(', ')}${leftover.length > 3 ? ', ...' : ''})`);
    // Its firewall too, unless another tsnet on this host (bridges of its own) still needs the shared table and hook.
    if ((await run('ip', ['-o', 'link', 'show', 'type', 'bridge'])).stdout.includes(': tsbr-')) {
      errors.push('left behind: nft table inet tsnet and the DOCKER-USER hook (another tsnet has bridges on this host)');
    } else {
      await step(`nft delete table inet ${tsnet?.name}`, () => run('nft', ['delete', 'table', 'inet', tsnet?.name ?? 'tsnet']));
      // The harness may give each tsnet its own mark bit (TsnetProcess.fwMark); tsnet's default otherwise.
      const markBit = `0x${((tsnet as { fwMark?: number } | undefined)?.fwMark ?? 0x2000000).toString(16)}`;
      const hook = ['DOCKER-USER', '-m', 'mark', '--mark', `${markBit}/${markBit}`, '-m', 'comment', '--comment', tsnet?.name ?? 'tsnet', '-j', 'ACCEPT'];
      for (const bin of ['iptables', 'ip6tables']) await step(`${bin} -D DOCKER-USER`, () => run(bin, ['-w', '-t', 'filter', '-D', ...hook]));
    }
  }
  if (dockerd) {
    const tsnetLog = env.log;
    if (tsnetLog) {
      await step('keep tsnet log', () => {
        fs.mkdirSync(path.join(REPO, '.tmp'), { recursive: true });
        fs.copyFileSync(tsnetLog.file, path.join(REPO, '.tmp', 'bench-tsnet.log'));
      });
    }
    await step('destroy dockerd', () => dockerd.destroy());
  }
  const strays = benchIperfPids();
  if (strays.length > 0) {
    errors.push(`left behind: iperf3 processes ${strays.join(', ')} (killed)`);
    for (const pid of strays) await step(`kill iperf3 ${pid}`, () => process.kill(pid, 'SIGKILL'));
  }
  return errors;
}

// ---------------------------------------------------------------------------------------------------------------
// report

interface Results {
  date: string;
  machine: Awaited<ReturnType<typeof machine>>;
  durationS: number;
  loadavg: { start: number[]; end: number[] };
  /** dockerd processes on the host besides the bench's own, sampled at every progress line (parallel test runs). */
  otherDockerdSeen: number;
  a: { create: Pair; rm: Pair; createRm: Pair; tsnetBackgroundMs: Stats; createSplit: Record<string, unknown> & { wall: Stats; tsnetPluginCalls: Stats; dockerdAndCli: Stats; tsnetSharePct: number; callsPerCreate: string[] } };
  b: Record<string, unknown> & { tsnet: Stats; docker: Stats; none: Stats; runRatio: number; shareTsnetMs: number; shareDockerMs: number; shareRatio: number; tsnetPluginCallsPerRun: Stats; tsnetBackgroundMs: Stats; callsPerRun: string[] };
  c: { connect: Pair; disconnect: Pair; connectDisconnect: Pair; tsnetBackgroundMs: Stats };
  d: { rssKiB: Record<string, number> };
  e: Record<string, unknown> & {
    latency: Partial<Record<string, Record<string, Stats | number>>>;
    serverSide: Partial<Record<string, Partial<Record<string, Stats>>>>;
    breakdown: Partial<Record<string, Breakdown>>;
    tsnetBackgroundMs: Record<string, Stats>;
    growMsPerEndpoint: number;
    removeMsPerEndpoint: number;
    vethsOnBridgeAtHigh: number;
  };
  f: Breakdown & { commands: Record<string, CommandShare> };
  g: {
    loopback: Stats;
    paths: Record<'c2c' | 'c2h', { tsnet: Stats; docker: Stats; ratio: number; tsnetOfLoopback: number; dockerOfLoopback: number }>;
    runs: Partial<Record<string, IperfRun[]>>;
    seconds: number;
    reps: number;
  };
  h: Record<string, unknown> & {
    run100: Pair;
    run0: Pair;
    rm100: Pair;
    rm0: Pair;
    publishShareTsnetMs: number;
    publishShareDockerMs: number;
    publishShareRatio: number;
    programExternalConnectivity: { total: Stats; exec: Stats; store: Stats; other: Stats };
    revokeExternalConnectivity: Stats;
    commands: Partial<Record<string, CommandShare>>;
    breakdown: Breakdown;
    verified: Record<string, Record<string, number>>;
    dockerProxies: Partial<Record<string, number>>;
    iptablesRules: Partial<Record<string, number>>;
    tsnetBackgroundMs: Stats;
  };
}

function summaryRows(r: Results): string[][] {
  const rows: string[][] = [['measurement', 'tsnet median', 'tsnet p95', 'Docker median', 'Docker p95', 'ratio', 'target', 'met']];
  const p = (label: string, x: Pair, target?: number) =>
    rows.push([label, f(x.tsnet.median), f(x.tsnet.p95), f(x.docker.median), f(x.docker.p95), x.ratio.toFixed(3), target === undefined ? '' : `≤ ${target.toFixed(2)}`, target === undefined ? '' : ok(x.ratio, target)]);
  p('(a) network create (ms)', r.a.create);
  p('(a) network rm (ms)', r.a.rm);
  p('(a) network create + rm (ms)', r.a.createRm, TARGETS.createRmRatio);
  const b = r.b;
  rows.push(['(b) run --rm true on the network (ms)', f(b.tsnet.median), f(b.tsnet.p95), f(b.docker.median), f(b.docker.p95), b.runRatio.toFixed(3), '', '']);
  rows.push(['(b) run --rm true, --network none (ms)', f(b.none.median), f(b.none.p95), f(b.none.median), f(b.none.p95), '', '', '']);
  rows.push(['(b) networking share (ms)', f(b.shareTsnetMs), '', f(b.shareDockerMs), '', b.shareRatio.toFixed(3), `≤ ${TARGETS.shareRatio.toFixed(2)}`, ok(b.shareRatio, TARGETS.shareRatio)]);
  p('(c) network connect (ms)', r.c.connect);
  p('(c) network disconnect (ms)', r.c.disconnect);
  p('(c) connect + disconnect (ms)', r.c.connectDisconnect, TARGETS.connectRatio);
  const g = r.g;
  const gb = (x: Stats) => x.median.toFixed(2);
  rows.push(['(g) iperf3 loopback 127.0.0.1, the ceiling (Gbit/s)', gb(g.loopback), '', gb(g.loopback), '', '', '', '']);
  for (const [k, label] of [['c2c', 'container → container'], ['c2h', 'container → host']] as const) {
    const x = g.paths[k];
    rows.push([`(g) iperf3 ${label} (Gbit/s; of loopback: tsnet ${pct(x.tsnetOfLoopback)}, Docker ${pct(x.dockerOfLoopback)})`, gb(x.tsnet), '', gb(x.docker), '', x.ratio.toFixed(3), `≥ ${TARGETS.iperfRatioMin.toFixed(2)}`, okMin(x.ratio, TARGETS.iperfRatioMin)]);
  }
  const h = r.h;
  p(`(h) run -d with ${H_PORTS} published ports (ms)`, h.run100, TARGETS.portsRatio);
  p('(h) run -d, same, no ports (ms)', h.run0);
  rows.push([`(h) publishing share: ${H_PORTS} ports − none (ms)`, f(h.publishShareTsnetMs), '', f(h.publishShareDockerMs), '', h.publishShareRatio.toFixed(3), '', '']);
  rows.push([`(h) tsnet ProgramExternalConnectivity, ${H_PORTS} ports (ms, tsnet's log)`, f(h.programExternalConnectivity.total.median), f(h.programExternalConnectivity.total.p95), '', '', '', '', '']);
  p(`(h) rm -f of it, ${H_PORTS} ports (ms)`, h.rm100);
  return rows;
}

function latencyRows(r: Results): string[][] {
  const lo = `live${E_LIVE_LOW}`;
  const hi = `live${E_LIVE_HIGH}`;
  const rows: string[][] = [['plugin call (client side, ms)', `p50 @${E_LIVE_LOW}`, `p99 @${E_LIVE_LOW}`, `p50 @${E_LIVE_HIGH}`, `p99 @${E_LIVE_HIGH}`, 'p99 growth', 'target', 'met']];
  const order = ['IpamDriver.RequestAddress', 'NetworkDriver.CreateEndpoint', 'NetworkDriver.Join', 'NetworkDriver.Leave', 'NetworkDriver.DeleteEndpoint', 'IpamDriver.ReleaseAddress'];
  for (const m of order) {
    const x = r.e.latency[m];
    if (!x) continue;
    const l = x[lo] as Stats;
    const h = x[hi] as Stats;
    const g = x.p99Growth as number;
    const targeted = m === 'NetworkDriver.CreateEndpoint' || m === 'NetworkDriver.Join';
    rows.push([m, f(l.median), f(l.p99), f(h.median), f(h.p99), g.toFixed(3), targeted ? `≤ ${TARGETS.p99Growth.toFixed(2)}` : '', targeted ? ok(g, TARGETS.p99Growth) : '']);
  }
  return rows;
}


function renderMarkdown(r: Results): string {
  const m = r.machine;
  const lo = `live${E_LIVE_LOW}`;
  const hi = `live${E_LIVE_HIGH}`;
  const s = r.a.createSplit;
  const rss = r.d.rssKiB;
  const mib = (k: number | undefined) => (k === undefined ? '—' : `${(k / 1024).toFixed(1)} MiB`);
  const out: string[] = [];
  out.push(`# tsnet benchmark — ${r.date.slice(0, 10)} on ${m.hostname}`);
  out.push('');
  out.push(
    `Machine: ${m.nproc} CPUs (${m.cpu}), ${m.memoryGiB} GiB RAM, kernel ${m.kernel}; dockerd ${m.dockerd} (CLI ${m.dockerCli}), ${m.iptables}; ` +
      `Node.js ${m.node}; tsnet ${m.tsnetCommit}. N = ${m.N} measured iterations per case after ${m.warmup} warm-ups, interleaved ` +
      `(tsnet, Docker, ...); (e) ${m.eSamples} samples per live count; (g) ${m.iperfReps} × ${m.iperfSeconds} s per path (${m.iperf3.replace(/ \(.*$/, '')}); (h) N = ${m.portsN}. Load average at start ${r.loadavg.start.map((x) => x.toFixed(2)).join(' ')}, ` +
      `at end ${r.loadavg.end.map((x) => x.toFixed(2)).join(' ')}. Run took ${r.durationS.toFixed(0)} s.`,
  );
  if (r.otherDockerdSeen > 0) {
    out.push('');
    out.push(`**Warning:** ${r.otherDockerdSeen} other dockerd process(es) ran on the host during the run (parallel tests?); numbers may be disturbed.`);
  }
  out.push('');
  out.push('One private dockerd (`--iptables=true`, `--bridge=none`), tsnet as a legacy plugin (`-d <name> --ipam-driver <name>`,');
  out.push('`--log-level debug`). Wall times are client side (the docker CLI process, fork to exit). Ratios are tsnet / Docker of medians.');
  out.push('');
  out.push('## Summary');
  out.push('');
  out.push(mdTable(summaryRows(r)));
  out.push('');
  out.push(`(b) networking share = median(run on the network) − median(run with \`--network none\`); ratio = tsnet share / Docker share.`);
  out.push('');
  const bg = (x: Stats | undefined) => (x ? `${f(x.median)} / ${f(x.p95)}` : '—');
  out.push(
    'After each tsnet command that removes links, the bench waits (untimed) until they are really gone, so that work ' +
      'tsnet may finish after answering neither lands on the next (Docker) measurement nor goes unnoticed. Time from ' +
      'the command\'s return until then, one `ip` poll (~3 ms) included, median / p95 ms:',
  );
  out.push('');
  out.push(mdTable([
    ['after', 'links gone after (ms)'],
    ['(a) `docker network rm` (the bridge)', bg(r.a.tsnetBackgroundMs)],
    ['(b) `docker run --rm` (the veth)', bg(r.b.tsnetBackgroundMs)],
    ['(c) `docker network disconnect` (the veth)', bg(r.c.tsnetBackgroundMs)],
    [`(e) Leave + DeleteEndpoint + ReleaseAddress @${E_LIVE_LOW} (the veth)`, bg(r.e.tsnetBackgroundMs[lo])],
    [`(e) Leave + DeleteEndpoint + ReleaseAddress @${E_LIVE_HIGH} (the veth)`, bg(r.e.tsnetBackgroundMs[hi])],
  ]));
  out.push('');
  out.push('## (d) tsnet memory (VmRSS)');
  out.push('');
  out.push(mdTable([
    ['state', 'RSS'],
    ['idle: after start + one network', mib(rss.idle)],
    ['after (a)–(c)', mib(rss.afterABC)],
    [`${E_LIVE_LOW} live endpoints`, mib(rss[lo])],
    [`${E_LIVE_HIGH} live endpoints`, mib(rss[hi])],
    [`${E_LIVE_HIGH} live endpoints, after the samples`, mib(rss[`${hi}AfterSamples`])],
    ['after (g), (h): every endpoint gone again', mib(rss.afterGH)],
  ]));
  out.push('');
  out.push(`## (e) endpoint latency, ${E_LIVE_LOW} vs ${E_LIVE_HIGH} live endpoints`);
  out.push('');
  out.push(
    `Calls straight to the plugin socket, as dockerd makes them (RequestAddress → CreateEndpoint → Join; Leave → DeleteEndpoint → ` +
      `ReleaseAddress), one new unix connection per call, timed around the HTTP request. Each sample creates one endpoint on top of ` +
      `the live ones and removes it again, after ${E_WARMUP} unmeasured cycles at ${E_LIVE_LOW} live. Real veth pairs (${r.e.vethsOnBridgeAtHigh} on the bridge at the high count).`,
  );
  out.push('');
  out.push(mdTable(latencyRows(r)));
  out.push('');
  out.push(`Building up: ${f(r.e.growMsPerEndpoint)} ms per endpoint (the three calls); tearing down: ${f(r.e.removeMsPerEndpoint)} ms per endpoint.`);
  out.push('');
  out.push('Server side (tsnet\'s own "plugin call" ms for the same samples):');
  out.push('');
  const srv = r.e.serverSide;
  out.push(mdTable([
    ['plugin call (server side, ms)', `p50 @${E_LIVE_LOW}`, `p99 @${E_LIVE_LOW}`, `p50 @${E_LIVE_HIGH}`, `p99 @${E_LIVE_HIGH}`],
    ...Object.entries(srv[lo] ?? {}).map(([k, x]) => [`\`${k}\``, f(x?.median), f(x?.p99), f(srv[hi]?.[k]?.median), f(srv[hi]?.[k]?.p99)]),
  ]));
  out.push('');
  const ebLo = r.e.breakdown[lo];
  const ebHi = r.e.breakdown[hi];
  // Either side may lack a key the other has.
  const cell = (m: Record<string, Stats> | undefined, k: string): Partial<Stats> => m?.[k] ?? {};
  out.push(mdTable([
    [`kernel / store during (e) (ms)`, `median @${E_LIVE_LOW}`, `p99 @${E_LIVE_LOW}`, `median @${E_LIVE_HIGH}`, `p99 @${E_LIVE_HIGH}`],
    ...Object.entries(ebLo?.exec ?? {}).map(([k, x]) => [`exec \`${k}\``, f(x.median), f(x.p99), f(cell(ebHi?.exec, k).median), f(cell(ebHi?.exec, k).p99)]),
    ...Object.entries(ebLo?.storeCommit ?? {}).map(([k, x]) => [
      `store commit \`${k}\``,
      f(x.median),
      f(x.p99),
      f(cell(ebHi?.storeCommit, k).median),
      f(cell(ebHi?.storeCommit, k).p99),
    ]),
  ]));
  out.push('');
  out.push('## (f) Where the time goes (tsnet debug log during the measured iterations of (a), (b), (c))');
  out.push('');
  out.push(
    `\`docker network create\` (tsnet): median wall ${f(s.wall.median)} ms, of which tsnet's plugin calls ${f(s.tsnetPluginCalls.median)} ms ` +
      `(${f(s.tsnetSharePct)} % of the median) and dockerd + CLI ${f(s.dockerdAndCli.median)} ms. Calls per create: ${s.callsPerCreate.map((c) => `\`${c}\``).join(', ')}.`,
  );
  out.push('');
  out.push(
    `\`docker run --rm\` on tsnet: median Σ plugin-call ms per run ${f(r.b.tsnetPluginCallsPerRun.median)} (networking share ${f(r.b.shareTsnetMs)} ms); ` +
      `calls per run: ${r.b.callsPerRun.map((c) => `\`${c}\``).join(', ')}.`,
  );
  out.push('');
  out.push(mdTable([
    ['docker command on tsnet', 'n', 'median wall ms', 'median Σ plugin-call ms', 'median rest (dockerd + CLI) ms', 'plugin calls, in order'],
    ...Object.entries(r.f.commands).map(([k, c]) => [k, String(c.wall.n), f(c.wall.median), f(c.pluginCalls.median), f(c.rest.median), c.calls.join(' → ')]),
  ]));
  out.push('');
  out.push('Per plugin call ("exec" = child processes: ip, nft, iptables; "store" = SQLite commits; "other" = the rest: HTTP parsing, zod, logic, logging):');
  out.push('');
  out.push(mdTable(callRows(r.f)));
  out.push('');
  out.push(mdTable(statsRows('step (setup pipeline)', r.f.steps)));
  out.push('');
  out.push(mdTable(statsRows('exec (call: command)', r.f.exec)));
  out.push('');
  out.push(mdTable(statsRows('store commit (call)', r.f.storeCommit)));
  out.push('');
  out.push(mdTable(statsRows('firewall change (call: first line)', r.f.firewallChange)));
  out.push('');
  renderIperf(r, out);
  renderPorts(r, out);
  return out.join('\n');
}

function renderIperf(r: Results, out: string[]): void {
  const g = r.g;
  const gb = (x: number) => x.toFixed(2);
  out.push('## (g) Throughput: iperf3, one TCP stream');
  out.push('');
  out.push(
    `\`iperf3 -c … -t ${g.seconds} -O 1 -J\` (the first second, slow start, is omitted), ${g.reps} repetitions per path after an unmeasured ` +
      `1-second run each, interleaved (loopback, then per path tsnet and Docker, which goes first alternating). The busybox containers run the host's iperf3 (binary and ` +
      `libraries bind-mounted read-only). Container → container: server and client containers on one network (tsnet ${NET.ghTsnet}, ` +
      `Docker bridge ${NET.ghDocker}). Container → host: the host's \`iperf3 -s -B <gateway>\` (${gatewayOf(NET.ghTsnet)}, ` +
      `${gatewayOf(NET.ghDocker)}), client in the container. Loopback: \`iperf3 -s -B 127.0.0.1\` and \`-c 127.0.0.1\` on the host, ` +
      'the ceiling of one stream on this machine. Gbit/s at the receiver.',
  );
  out.push('');
  const rows: string[][] = [['path', 'tsnet median', 'Docker median', 'ratio', 'target', 'met', 'tsnet / loopback', 'Docker / loopback', 'tsnet min–max', 'Docker min–max']];
  rows.push(['loopback 127.0.0.1 (host)', gb(g.loopback.median), gb(g.loopback.median), '', '', '', '1.000', '1.000', `${gb(g.loopback.min)}–${gb(g.loopback.max)}`, '']);
  for (const [k, label] of [['c2c', 'container → container'], ['c2h', 'container → host (gateway)']] as const) {
    const x = g.paths[k];
    rows.push([label, gb(x.tsnet.median), gb(x.docker.median), x.ratio.toFixed(3), `≥ ${TARGETS.iperfRatioMin.toFixed(2)}`, okMin(x.ratio, TARGETS.iperfRatioMin), x.tsnetOfLoopback.toFixed(3), x.dockerOfLoopback.toFixed(3), `${gb(x.tsnet.min)}–${gb(x.tsnet.max)}`, `${gb(x.docker.min)}–${gb(x.docker.max)}`]);
  }
  out.push(mdTable(rows));
  out.push('');
  out.push(
    'Every run (Gbit/s, TCP retransmits, iperf3\'s CPU % of one core: sender / receiver). One stream is CPU-bound here: a sender ' +
      'below 80 % of a core (†) was short of CPU (other load on the machine), and its number says more about that load than about the path.',
  );
  out.push('');
  const names: Record<string, string> = { loopback: 'loopback', 'c2c.tsnet': 'tsnet container → container', 'c2c.docker': 'Docker container → container', 'c2h.tsnet': 'tsnet container → host', 'c2h.docker': 'Docker container → host' };
  out.push(mdTable([
    ['path', ...Array.from({ length: g.reps }, (_, i) => `run ${i + 1}`)],
    ...Object.entries(names).flatMap(([k, name]) => {
      const runs = g.runs[k];
      return runs ? [[name, ...runs.map((x) => `${gb(x.gbps)}${x.cpuSender < 80 ? ' †' : ''} (${x.retransmits} retr, ${x.cpuSender.toFixed(0)} / ${x.cpuReceiver.toFixed(0)} %)`)]] : [];
    }),
  ]));
  out.push('');
}

function renderPorts(r: Results, out: string[]): void {
  const h = r.h;
  const pec = h.programExternalConnectivity;
  const hp = h.hostPorts as Record<string, string>;
  out.push(`## (h) Starting a container that publishes ${H_PORTS} ports`);
  out.push('');
  out.push(
    `\`docker run -d --network <net> -p HOST:CPORT ×${H_PORTS} busybox sh -c '… exec httpd -f -p ${H_CPORT_BASE} …'\` on the (g) networks, host ports ` +
      `${hp.tsnet} (tsnet) and ${hp.docker} (Docker) → container ports ${String(h.containerPorts)}; wall time of the CLI until it returns, ` +
      `N = ${r.machine.portsN} per driver after ${H_WARMUP} unmeasured, interleaved with the same run without \`-p\`; each container is removed ` +
      '(`docker rm -f`, timed separately) and its host ports are seen free again before the next run. **Docker\'s bridge runs with its default ' +
      `userland proxy**: ${h.dockerProxies.docker ?? '?'} \`docker-proxy\` processes (IPv4 and IPv6 wildcard per port) and ` +
      `${h.iptablesRules.docker ?? '?'} iptables rules naming the container for one such container (tsnet: ${h.dockerProxies.tsnet ?? '?'} and ` +
      `${h.iptablesRules.tsnet ?? '?'}; it holds the host ports with sockets of its own and DNATs with ${H_PORTS} elements of one nftables map). ` +
      'That is what an operator gets from Docker without changing its defaults.',
  );
  out.push('');
  out.push(
    'Working publications, checked once per driver (first, unmeasured run): an HTTP GET from the host with Node\'s client answered by ' +
      'the container\'s httpd; ms from `docker run -d` returning until the first answer (httpd\'s start included): ' +
      Object.entries(h.verified).flatMap(([d, v]) => Object.entries(v).map(([u, ms]) => `${d} \`${u}\` ${f(ms)} ms`)).join(', ') + '.',
  );
  out.push('');
  out.push(mdTable([
    ['command (ms)', 'tsnet median', 'tsnet p95', 'Docker median', 'Docker p95', 'ratio', 'target', 'met'],
    [`run -d, ${H_PORTS} ports`, f(h.run100.tsnet.median), f(h.run100.tsnet.p95), f(h.run100.docker.median), f(h.run100.docker.p95), h.run100.ratio.toFixed(3), `≤ ${TARGETS.portsRatio.toFixed(2)}`, ok(h.run100.ratio, TARGETS.portsRatio)],
    ['run -d, no ports', f(h.run0.tsnet.median), f(h.run0.tsnet.p95), f(h.run0.docker.median), f(h.run0.docker.p95), h.run0.ratio.toFixed(3), '', ''],
    [`publishing share (${H_PORTS} − none, medians)`, f(h.publishShareTsnetMs), '', f(h.publishShareDockerMs), '', h.publishShareRatio.toFixed(3), '', ''],
    [`rm -f, ${H_PORTS} ports`, f(h.rm100.tsnet.median), f(h.rm100.tsnet.p95), f(h.rm100.docker.median), f(h.rm100.docker.p95), h.rm100.ratio.toFixed(3), '', ''],
    ['rm -f, no ports', f(h.rm0.tsnet.median), f(h.rm0.tsnet.p95), f(h.rm0.docker.median), f(h.rm0.docker.p95), h.rm0.ratio.toFixed(3), '', ''],
  ]));
  out.push('');
  out.push(
    `tsnet's \`ProgramExternalConnectivity\` for ${H_PORTS} ports (its debug log, server side): median ${f(pec.total.median)} ms, p95 ${f(pec.total.p95)} ms, ` +
      `max ${f(pec.total.max)} ms; of the median: child processes (nft) ${f(pec.exec.median)} ms, SQLite ${f(pec.store.median)} ms, the rest ` +
      `(${H_PORTS} host-port sockets bound, HTTP, zod, logic, logging) ${f(pec.other.median)} ms. \`RevokeExternalConnectivity\` on \`docker rm -f\`: median ` +
      `${f(h.revokeExternalConnectivity.median)} ms. Links of a removed tsnet container gone ${f(h.tsnetBackgroundMs.median)} ms (median) after \`rm -f\` returned.`,
  );
  out.push('');
  out.push(mdTable([
    ['docker command on tsnet', 'n', 'median wall ms', 'median Σ plugin-call ms', 'median rest (dockerd + CLI) ms', 'plugin calls, in order'],
    ...Object.entries(h.commands).flatMap(([k, c]) =>
      c ? [[k, String(c.wall.n), f(c.wall.median), f(c.pluginCalls.median), f(c.rest.median), c.calls.join(' → ')]] : [],
    ),
  ]));
  out.push('');
  out.push(mdTable(callRows(h.breakdown)));
  out.push('');
  out.push(mdTable(statsRows('exec during (h) (call: command)', h.breakdown.exec)));
  out.push('');
  out.push(mdTable(statsRows('firewall change during (h) (call: first line)', h.breakdown.firewallChange)));
  out.push('');
}

// ---------------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const session = await Session.prepare();
  const { started, t0, loadStart } = session;
  let restoreForwarding: (() => void) | undefined;
  const env: Partial<Env> = { tsnetNetworks: new Set(), netIds: new Map() };
  const measure = async (): Promise<Results> => {
    restoreForwarding = forwardingOn();
    const { dockerd, docker, tsnet, name, log } = await session.start();
    Object.assign(env, { dockerd, docker, tsnet, name, log });
    const e = env as Env;
    const mach = await machine(docker);

    // (d) idle: right after start and the first network.
    await createNet(e, 'bench-b-tsnet', 'tsnet', NET.bTsnet);
    await sleep(500);
    const rss: Record<string, number> = { idle: readRssKiB(livePid(tsnet.pid, 'tsnet')) };
    await createNet(e, 'bench-b-docker', 'docker', NET.bDocker);
    await createNet(e, 'bench-c-tsnet', 'tsnet', NET.cTsnet);
    await createNet(e, 'bench-c-docker', 'docker', NET.cDocker);
    await createNet(e, 'bench-c-home', 'docker', NET.cHome);

    progress(`(a) network create + rm, N=${N}`);
    const a = (await benchNetworks(e)) as Results['a'];
    progress(`(b) docker run --rm, N=${N}`);
    const b = (await benchRun(e)) as Results['b'];
    progress(`(c) network connect + disconnect, N=${N}`);
    const c = (await benchConnect(e)) as Results['c'];
    rss.afterABC = readRssKiB(livePid(tsnet.pid, 'tsnet'));
    const fLines = e.log.windowsOf(['a', 'b', 'c']).flatMap((w) => e.log.linesOf(w));
    const fb = { ...breakdown(fLines), commands: commandShares(e.log, ['a', 'b', 'c']) };
    progress(`(e) endpoint latency at ${E_LIVE_LOW} and ${E_LIVE_HIGH} live endpoints`);
    const eRes = (await benchEndpoints(e, rss)) as Results['e'];
    progress(`(g) iperf3 throughput, ${IPERF_REPS} × ${IPERF_SECONDS} s per path`);
    const g = (await benchIperf(e)) as Results['g'];
    progress(`(h) docker run -d with ${H_PORTS} published ports, N=${PORTS_N}`);
    const h = (await benchPorts(e)) as Results['h'];
    for (const d of ['tsnet', 'docker'] as const) await rmNet(e, `bench-gh-${d}`, e.netIds.get(`bench-gh-${d}`));
    await sleep(500);
    rss.afterGH = readRssKiB(livePid(tsnet.pid, 'tsnet'));
    return {
      date: started.toISOString(),
      machine: mach,
      durationS: 0,
      loadavg: { start: loadStart, end: os.loadavg() },
      otherDockerdSeen: 0,
      a,
      b,
      c,
      d: { rssKiB: rss },
      e: eRes,
      f: fb,
      g,
      h,
    };
  };
  const results = await measureThenTearDown(t0, measure, async () => {
    const errors = await teardown(env, session.dockerd, session.tsnet);
    restoreForwarding?.();
    session.release();
    return errors;
  });
  if (!results) return;
  const host = (os.hostname().replace(/[^A-Za-z0-9_.-]/g, '') || 'node').slice(0, 40);
  const base = path.join(RESULTS_DIR, `${started.toISOString().slice(0, 10)}-${host}`);
  const md = renderMarkdown(results);
  saveResults(base, results, md);
  fs.writeFileSync(path.join(RESULTS_DIR, 'latest.md'), md);

  const rss = results.d.rssKiB;
  console.log('');
  console.log(textTable(summaryRows(results)));
  console.log('');
  console.log(textTable(latencyRows(results)));
  console.log('');
  console.log(
    `(d) tsnet RSS: idle ${(rss.idle / 1024).toFixed(1)} MiB, ${E_LIVE_HIGH} live endpoints ${((rss[`live${E_LIVE_HIGH}`] ?? NaN) / 1024).toFixed(1)} MiB`,
  );
  console.log(
    `(f) docker network create: wall ${f(results.a.createSplit.wall.median)} ms = tsnet plugin calls ${f(results.a.createSplit.tsnetPluginCalls.median)} ms + dockerd/CLI ${f(results.a.createSplit.dockerdAndCli.median)} ms`,
  );
  const hc = results.h.commands[`(h) docker run -d, ${H_PORTS} ports`];
  console.log(
    `(h) docker run -d with ${H_PORTS} ports on tsnet: wall ${f(hc?.wall.median)} ms = tsnet plugin calls ${f(hc?.pluginCalls.median)} ms ` +
      `(ProgramExternalConnectivity ${f(results.h.programExternalConnectivity.total.median)} ms) + dockerd/CLI ${f(hc?.rest.median)} ms; ` +
      `Docker: ${results.h.dockerProxies.docker} docker-proxy processes per container`,
  );
  console.log('');
  console.log(textTable(callRows(results.f)));
  console.log('');
  if (otherDockerdsSeen() > 0) console.log(`warning: ${otherDockerdsSeen()} other dockerd process(es) ran during the bench; numbers may be disturbed`);
  console.log(`results: ${path.relative(REPO, base)}.{json,md}, bench/results/latest.md (${results.durationS.toFixed(0)} s)`);
}

// A failure ends the bench at once (as the unhandled rejection did): leftover children must not keep it alive.
main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
