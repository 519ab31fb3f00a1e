/**
 * macvlan benchmark (issue 8, item 8): tsnet's macvlan mode against Docker's own macvlan driver in the same run, both
 * against a raw macvlan pair made with `ip` (no Docker), on parents the bench makes (veth pairs to a "LAN peer"
 * namespace; see macvlan/topology.ts). One private dockerd, tsnet as a legacy plugin at `--log-level debug`.
 *
 *   (a) `docker network create -o parent=…` + `rm`, tsnet vs Docker's macvlan, interleaved
 *   (b) `docker run --rm busybox true` on each and with `--network none`: the networking share
 *   (g) iperf3, one TCP stream: container → LAN peer, LAN peer → container, container → container; raw, tsnet and
 *       Docker in every round, in a rotating order
 *
 * Results: bench/results/<date>-macvlan.{json,md}. Knobs (env): BENCH_N (30), BENCH_WARMUP (3), BENCH_IPERF_SECONDS
 * (5), BENCH_MACVLAN_IPERF_REPS (6), BENCH_TSNET_ROOT / BENCH_TSNET_LABEL. See bench/README.md.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BUSYBOX_IMAGE } from '../test/harness/busybox';
import type { Docker, Dockerd } from '../test/harness/dockerd';
import { waitFor } from '../test/harness/exec';
import { linksOwnedBy, pidsInCgroupsNamed } from '../test/harness/host';
import type { TsnetProcess } from '../test/harness/tsnet';
import { envInt, REPO, RESULTS_DIR } from './lib/config';
import { hostFacts, quiesce } from './lib/host';
import { iperfArgs, iperfClient, type IperfRun, iperfTimeoutMs, IPERF_MOUNTS } from './lib/iperf';
import { measureThenTearDown, progress, saveResults } from './lib/progress';
import { textTable } from './lib/report';
import { Session } from './lib/session';
import { median, pair, r2, ratio, stats } from './lib/stats';
import { reviveDaemons, stopAfterAbort, teardownSteps } from './lib/teardown';
import { breakdown, commandShares, type TsnetLog } from './lib/tsnet-log';
import { DOCKER_IPAM_SUBNET24, type GPath, G_PATHS, type IperfPath, renderMarkdown, type Results, summaryRows } from './macvlan/report';
import { C2C_PORT, eth0Summary, Topology, type Variant, VARIANTS } from './macvlan/topology';

const N = envInt('BENCH_N', 30, 1);
const WARMUP = envInt('BENCH_WARMUP', 3, 0);
const IPERF_SECONDS = envInt('BENCH_IPERF_SECONDS', 5, 1);
/** Six rounds by default: every order of the three variants once. */
const IPERF_REPS = envInt('BENCH_MACVLAN_IPERF_REPS', 6, 1);

type Driver = 'tsnet' | 'docker';
const DRIVERS = ['tsnet', 'docker'] as const;

/** Every order of three, one per round or iteration, so none always runs first or after the same one. */
const PERMUTATIONS = [
  [0, 1, 2],
  [2, 0, 1],
  [1, 2, 0],
  [2, 1, 0],
  [0, 2, 1],
  [1, 0, 2],
] as const;
const inOrder = <T>(xs: readonly [T, T, T], i: number): T[] => PERMUTATIONS[i % PERMUTATIONS.length].map((k) => xs[k]);

/**
 * What (a) and (b) measure: tsnet with its own IPAM (as the bridge bench does), Docker's macvlan, and tsnet's driver
 * with Docker's IPAM, which tells the IPAM's round trips from the driver's.
 */
const NET_KINDS = ['tsnet', 'docker', 'tsnetDockerIpam'] as const;
type NetKind = (typeof NET_KINDS)[number];
/** Its phases: apart from tsnet's own, so the per-call breakdown is of one configuration. */
const phaseOf = (k: NetKind, p: 'a' | 'b') => (k === 'tsnetDockerIpam' ? `${p}2` : p);
/** The tsnet log labels of both tsnet kinds start with `tsnet ` (commandShares picks those). */
const labelOf = (k: NetKind) => (k === 'docker' ? 'docker' : 'tsnet');

interface Env {
  docker: Docker;
  dockerd: Dockerd;
  tsnet: TsnetProcess;
  name: string;
  log: TsnetLog;
  topo: Topology;
  /** Networks the bench created (name → driver), for teardown. */
  networks: Map<string, Driver>;
}

const parentOf = (env: Env, k: NetKind) => env.topo.wires[k === 'docker' ? 'docker' : 'tsnet'].parent;

/** `docker network create` of a macvlan network on the kind's parent (see NET_KINDS). */
async function createNet(env: Env, name: string, k: NetKind): Promise<string> {
  const subnet24 = k === 'tsnetDockerIpam' ? DOCKER_IPAM_SUBNET24 : env.topo.wires[k].subnet24;
  const tsnetArgs = ['-d', env.name, '-o', 'mode=macvlan'];
  const driverArgs = { tsnet: [...tsnetArgs, '--ipam-driver', env.name], tsnetDockerIpam: tsnetArgs, docker: ['-d', 'macvlan'] }[k];
  const id = await env.docker.docker([
    'network',
    'create',
    ...driverArgs,
    '-o',
    `parent=${parentOf(env, k)}`,
    '-o',
    'macvlan_mode=bridge',
    '--subnet',
    `${subnet24}.0/24`,
    '--gateway',
    `${subnet24}.1`,
    name,
  ]);
  env.networks.set(name, k === 'docker' ? 'docker' : 'tsnet');
  return id;
}

async function rmNet(env: Env, name: string): Promise<void> {
  await env.docker.docker(['network', 'rm', name]);
  env.networks.delete(name);
}

/**
 * After a command that removes a container's link, waits (untimed) until no macvlan child of the driver's parent is
 * left in the host namespace, so deletions either driver finishes after answering do not land on the next
 * measurement; tsnet's wait is reported.
 */
async function settleChildren(env: Env, k: NetKind): Promise<number> {
  const parent = parentOf(env, k);
  const none = async () => (await env.topo.childrenOf(parent)).length === 0;
  if (k !== 'docker') return quiesce(`deletion of the macvlan children of ${parent}`, none, performance.now());
  await waitFor(none, 10_000, () => `Docker: macvlan children of ${parent} still present 10 s after the command returned`, 2);
  return 0;
}

function progressEvery(what: string, i: number): void {
  if (i === WARMUP - 1 || i === WARMUP + N - 1 || (i - WARMUP + 1) % 10 === 0) progress(`${what} ${i + 1}/${WARMUP + N}`);
}

/** (a) network create + rm on the parents, the kinds in rotating order, after warm-ups. */
async function benchNetworks(env: Env): Promise<Results['a']> {
  const xs = Object.fromEntries(NET_KINDS.map((k) => [k, { create: [] as number[], rm: [] as number[], total: [] as number[] }]));
  for (let i = 0; i < WARMUP + N; i++) {
    const measured = i >= WARMUP;
    for (const k of inOrder(NET_KINDS, i)) {
      const phase = measured ? phaseOf(k, 'a') : 'a-warmup';
      const name = `bench-mva-${k}-${i}`;
      const c = await env.log.measure(phase, `${labelOf(k)} network create`, () => createNet(env, name, k));
      const r = await env.log.measure(phase, `${labelOf(k)} network rm`, () => rmNet(env, name));
      if (measured) {
        xs[k].create.push(c.ms);
        xs[k].rm.push(r.ms);
        xs[k].total.push(c.ms + r.ms);
      }
    }
    progressEvery('(a) network create+rm', i);
  }
  await env.log.settle();
  const x = xs.tsnetDockerIpam;
  return {
    create: pair(xs.tsnet.create, xs.docker.create),
    rm: pair(xs.tsnet.rm, xs.docker.rm),
    createRm: pair(xs.tsnet.total, xs.docker.total),
    tsnetDockerIpam: {
      create: stats(x.create),
      rm: stats(x.rm),
      createRm: stats(x.total),
      createRmRatio: ratio(median(x.total), median(xs.docker.total)),
    },
  };
}

/** (b) `docker run --rm busybox true` on each kind's network and with `--network none` (always last). */
async function benchRun(env: Env, nets: Record<NetKind, string>): Promise<Results['b']> {
  const xs: Record<NetKind | 'none', number[]> = { tsnet: [], docker: [], tsnetDockerIpam: [], none: [] };
  const background: number[] = [];
  for (let i = 0; i < WARMUP + N; i++) {
    const measured = i >= WARMUP;
    for (const k of [...inOrder(NET_KINDS, i), 'none'] as const) {
      const phase = measured ? (k === 'none' ? 'b' : phaseOf(k, 'b')) : 'b-warmup';
      const r = await env.log.measure(phase, `${k === 'none' ? 'none' : labelOf(k)} run --rm`, () =>
        env.docker.docker(['run', '--rm', '--network', k === 'none' ? 'none' : nets[k], BUSYBOX_IMAGE, 'true']),
      );
      const bg = k === 'none' ? 0 : await settleChildren(env, k);
      if (measured) {
        xs[k].push(r.ms);
        if (k === 'tsnet') background.push(bg);
      }
    }
    progressEvery('(b) docker run --rm', i);
  }
  await env.log.settle();
  const none = median(xs.none);
  const share = (k: NetKind) => median(xs[k]) - none;
  return {
    run: pair(xs.tsnet, xs.docker),
    none: stats(xs.none),
    shareTsnetMs: r2(share('tsnet')),
    shareDockerMs: r2(share('docker')),
    shareRatio: ratio(share('tsnet'), share('docker')),
    tsnetBackgroundMs: stats(background),
    tsnetDockerIpam: {
      run: stats(xs.tsnetDockerIpam),
      shareMs: r2(share('tsnetDockerIpam')),
      shareRatio: ratio(share('tsnetDockerIpam'), share('docker')),
    },
  };
}

/** Container names of (g): an iperf3 server and a client per driver. */
const srvName = (d: Driver) => `bench-mvg-srv-${d}`;
const cliName = (d: Driver) => `bench-mvg-cli-${d}`;

async function containerIp(env: Env, container: string, network: string): Promise<string> {
  return env.docker.docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, container]);
}

/**
 * (g) one TCP stream per run, after an unmeasured 1-second run per path and variant; each round measures every path
 * for the three variants in the round's order (ORDERS). The raw variant runs iperf3 in its namespaces with
 * `ip netns exec`, the containers the same binary with `docker exec`.
 */
async function benchIperf(env: Env, nets: Record<Driver, string>, containers: string[]): Promise<Results['g']> {
  const topo = env.topo;
  const c2cServer: Record<Variant, string> = { raw: topo.raw.serverIp, tsnet: '', docker: '' };
  for (const d of DRIVERS) {
    containers.push(
      await env.docker.docker([
        'run',
        '-d',
        '--name',
        srvName(d),
        '--network',
        nets[d],
        ...IPERF_MOUNTS,
        BUSYBOX_IMAGE,
        '/iperf3',
        '-s',
        '-p',
        String(C2C_PORT),
      ]),
      await env.docker.docker(['run', '-d', '--name', cliName(d), '--network', nets[d], ...IPERF_MOUNTS, BUSYBOX_IMAGE, 'sleep', '86400']),
    );
    c2cServer[d] = await containerIp(env, srvName(d), nets[d]);
  }
  await topo.startServers();
  const inContainer = async (c: string) => ['nsenter', '-t', await env.docker.docker(['inspect', '-f', '{{.State.Pid}}', c]), '-n', 'ip'];
  const links: Record<Variant, { client: string; server: string }> = {
    raw: { client: await eth0Summary(['ip', '-n', topo.raw.client]), server: await eth0Summary(['ip', '-n', topo.raw.server]) },
    tsnet: { client: await eth0Summary(await inContainer(cliName('tsnet'))), server: await eth0Summary(await inContainer(srvName('tsnet'))) },
    docker: { client: await eth0Summary(await inContainer(cliName('docker'))), server: await eth0Summary(await inContainer(srvName('docker'))) },
  };
  const measure = async (p: GPath, v: Variant, seconds: number): Promise<IperfRun> => {
    const w = topo.wires[v];
    const args =
      p === 'c2c'
        ? iperfArgs(c2cServer[v], C2C_PORT, seconds)
        : [...iperfArgs(`${w.subnet24}.1`, w.lanPort, seconds), ...(p === 'l2c' ? ['-R'] : [])];
    const timeoutMs = iperfTimeoutMs(seconds);
    const r = await iperfClient(`${v} ${p}`, () =>
      v === 'raw'
        ? topo.exec(topo.raw.client, 'iperf3', args, timeoutMs)
        : env.docker.dockerTry(['exec', cliName(v), '/iperf3', ...args], { timeoutMs }),
    );
    // With -R the server sends: iperf3's host figure is then the receiver's.
    return p === 'l2c' ? { ...r, cpuSender: r.cpuReceiver, cpuReceiver: r.cpuSender } : r;
  };
  for (const p of G_PATHS) for (const v of VARIANTS) await measure(p, v, 1);
  const none = (): Record<Variant, IperfRun[]> => ({ raw: [], tsnet: [], docker: [] });
  const runs: Record<GPath, Record<Variant, IperfRun[]>> = { c2l: none(), l2c: none(), c2c: none() };
  const orders = Array.from({ length: Math.min(IPERF_REPS, PERMUTATIONS.length) }, (_, i) => inOrder(VARIANTS, i).join(','));
  /** The 1-minute load average after each round: other work on the machine shows there. */
  const load: number[] = [];
  for (let i = 0; i < IPERF_REPS; i++) {
    const order = inOrder(VARIANTS, i);
    for (const p of G_PATHS) for (const v of order) runs[p][v].push(await measure(p, v, IPERF_SECONDS));
    load.push(r2(os.loadavg()[0]));
    progress(
      `(g) round ${i + 1}/${IPERF_REPS} (${order.join(', ')}): ` +
        G_PATHS.map((p) => `${p} ${VARIANTS.map((v) => runs[p][v][i].gbps.toFixed(2)).join('/')}`).join(', ') +
        ' Gbit/s (raw/tsnet/docker)',
    );
  }
  await topo.stopServers();
  for (const d of DRIVERS) await env.docker.docker(['rm', '-f', srvName(d), cliName(d)]);
  const paths = Object.fromEntries(G_PATHS.map((p) => [p, iperfPath(runs[p])])) as Record<GPath, IperfPath>;
  return { paths, links, seconds: IPERF_SECONDS, reps: IPERF_REPS, load, orders };
}

/** Medians, their ratios, and the ratios within each round (the same moment's load on both sides), in percent. */
function iperfPath(runs: Record<Variant, IperfRun[]>): IperfPath {
  const g = (v: Variant) => runs[v].map((r) => r.gbps);
  const s = { raw: stats(g('raw')), tsnet: stats(g('tsnet')), docker: stats(g('docker')) };
  const within = (a: Variant, b: Variant) => stats(g(a).map((x, i) => (100 * x) / g(b)[i]));
  return {
    gbps: s,
    tsnetOfRaw: ratio(s.tsnet.median, s.raw.median),
    dockerOfRaw: ratio(s.docker.median, s.raw.median),
    tsnetOfDocker: ratio(s.tsnet.median, s.docker.median),
    perRoundPct: { tsnetOfRaw: within('tsnet', 'raw'), dockerOfRaw: within('docker', 'raw'), tsnetOfDocker: within('tsnet', 'docker') },
    runs,
  };
}

/** Every step runs even if an earlier one failed; the errors are returned. */
async function teardown(env: Partial<Env>, dockerd: Dockerd | undefined, tsnet: TsnetProcess | undefined, containers: string[]): Promise<string[]> {
  const steps = teardownSteps();
  const { errors, step } = steps;
  await stopAfterAbort(steps, dockerd, tsnet);
  await step('stop the iperf3 servers', () => env.topo?.stopServers());
  // dockerd removes tsnet's networks only through tsnet.
  await reviveDaemons(steps, dockerd, tsnet, [...(env.networks?.values() ?? [])].includes('tsnet'));
  if (dockerd?.pid !== undefined) {
    await step('remove containers', () => dockerd.docker.removeAllContainers());
    await step('remove networks', () => dockerd.docker.removeCustomNetworks());
  }
  if (tsnet) {
    const owned = await linksOwnedBy(`tsnet:${tsnet.name}`).catch(() => []);
    if (owned.length > 0) errors.push(`left behind by tsnet: ${owned.join(', ')}`);
    await step('stop tsnet', () => tsnet.stop());
    await step('remove plugin socket', () => fs.rmSync(tsnet.socket, { force: true }));
  }
  if (dockerd) {
    if (env.log) {
      const file = env.log.file;
      await step('keep tsnet log', () => fs.copyFileSync(file, path.join(REPO, '.tmp', 'bench-macvlan-tsnet.log')));
    }
    await step('destroy dockerd', () => dockerd.destroy());
  }
  if (env.topo) {
    const topo = env.topo;
    await step('delete the bench namespaces and parents', async () => {
      const leftover = await topo.destroy();
      if (leftover.length > 0) errors.push(`parents left after their namespaces went (deleted): ${leftover.join(', ')}`);
    });
    const strays = [...topo.serverPids, ...pidsInCgroupsNamed(containers)].filter((pid) => fs.existsSync(`/proc/${pid}`));
    if (strays.length > 0) errors.push(`left behind: processes ${strays.join(', ')}`);
  }
  return errors;
}

async function main(): Promise<void> {
  const session = await Session.prepare();
  const { started, t0, loadStart } = session;
  fs.mkdirSync(path.join(REPO, '.tmp'), { recursive: true });
  const env: Partial<Env> = { networks: new Map() };
  const containers: string[] = [];
  const measure = async (): Promise<Results> => {
    const { dockerd, docker, tsnet, name, log } = await session.start(async (d) => {
      const topo = new Topology(d.dir);
      env.topo = topo;
      await topo.build();
      progress(`parents ${VARIANTS.map((v) => topo.wires[v].parent).join(', ')} (raw, tsnet, Docker), LAN peer namespace ${topo.lanNs}`);
    });
    Object.assign(env, { dockerd, docker, tsnet, name, log });
    const e = env as Env;
    const { iperf3, ...host } = await hostFacts(docker);
    const machine = { ...host, iperf3, N, warmup: WARMUP, iperfSeconds: IPERF_SECONDS, iperfReps: IPERF_REPS };

    progress(`(a) network create + rm, N=${N}`);
    const a = await benchNetworks(e);
    const loadAfterA = os.loadavg();
    const nets: Record<NetKind, string> = { tsnet: 'bench-mv-tsnet', docker: 'bench-mv-docker', tsnetDockerIpam: 'bench-mv-tsnet-dipam' };
    for (const k of NET_KINDS) await createNet(e, nets[k], k);
    progress(`(b) docker run --rm, N=${N}`);
    const b = await benchRun(e, nets);
    const loadAfterB = os.loadavg();
    const abLines = e.log.windowsOf(['a', 'b']).flatMap((w) => e.log.linesOf(w));
    const f = { ...breakdown(abLines), commands: commandShares(e.log, ['a', 'b', 'a2', 'b2']) };
    progress(`(g) iperf3, ${IPERF_REPS} rounds × ${IPERF_SECONDS} s per path and variant`);
    const g = await benchIperf(e, nets, containers);
    for (const k of NET_KINDS) await rmNet(e, nets[k]);
    return {
      date: started.toISOString(),
      machine,
      wires: e.topo.wires,
      durationS: 0,
      loadavg: { start: loadStart, afterA: loadAfterA, afterB: loadAfterB, end: os.loadavg() },
      otherDockerdSeen: 0,
      a,
      b,
      f,
      g,
    };
  };
  const results = await measureThenTearDown(t0, measure, async () => {
    const errors = await teardown(env, session.dockerd, session.tsnet, containers);
    session.release();
    return errors;
  });
  if (!results) return;
  const base = path.join(RESULTS_DIR, `${started.toISOString().slice(0, 10)}-macvlan`);
  saveResults(base, results, renderMarkdown(results));
  console.log('');
  console.log(textTable(summaryRows(results)));
  console.log('');
  if (results.otherDockerdSeen > 0)
    console.log(`warning: ${results.otherDockerdSeen} other dockerd process(es) ran during the bench; numbers may be disturbed`);
  console.log(`results: ${path.relative(REPO, base)}.{json,md} (${results.durationS.toFixed(0)} s)`);
}

// A failure ends the bench at once: leftover children must not keep it alive.
main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
