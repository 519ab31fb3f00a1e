/**
 * DNS benchmark (issue 9, item 8): dnsperf against tsnet's DNS server, dnsmasq serving the same names from a hosts
 * file, Docker's embedded DNS (127.0.0.11, from inside a container) and a dns2 3.1.1 UDPServer (the library the card
 * names), in one run on the same records: N containers on a tsnet bridge network under one private dockerd.
 *
 *   unlimited rate and a fixed 10k qps, several rounds in rotating order: qps, latency avg / p99 / max, lost
 *   tsnet's CPU (from /proc/PID/stat) during the unlimited runs, and a `node --cpu-prof` run's top functions
 *   tsnet's RSS idle and after the runs; the listener fuzz (UDP and TCP) with tsnet still answering afterwards
 *
 * Results: bench/results/<date>-dns.{json,md}. Knobs (env): BENCH_DNS_CONTAINERS (50), BENCH_DNS_ROUNDS (3),
 * BENCH_DNS_SECONDS (15), BENCH_DNS_FIXED_SECONDS (10), BENCH_DNS_FIXED_QPS (10000), BENCH_DNS_CLIENTS (1),
 * BENCH_DNS_THREADS (1), BENCH_DNS_OUTSTANDING (100), BENCH_DNS_FUZZ (100000 per transport), BENCH_DNS_FUZZ_SEED, BENCH_DNS_PORT (53),
 * BENCH_DNS_TARGETS (all), BENCH_TSNET_ROOT / BENCH_TSNET_LABEL. See bench/README.md.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BUSYBOX_IMAGE } from '../test/harness/busybox';
import type { Docker, Dockerd } from '../test/harness/dockerd';
import { spawnDaemon, terminate, waitFor } from '../test/harness/exec';
import { linksOwnedBy } from '../test/harness/host';
import { fuzzPacket, prng } from '../test/fuzz/dns-packets';
import { TsnetProcess } from '../test/harness/tsnet';
import { envInt, REPO, RESULTS_DIR } from './lib/config';
import { cmdOut, hostFacts, livePid, readRssKiB } from './lib/host';
import { measureThenTearDown, progress, saveResults } from './lib/progress';
import { textTable } from './lib/report';
import { Session } from './lib/session';
import { reviveDaemons, stopAfterAbort, teardownSteps, tsnetAnswers } from './lib/teardown';
import { readProfile, topFunctions, withCpu } from './dns/cpu';
import { Dnsmasq } from './dns/dnsmasq';
import { dnsperf, type Load } from './dns/dnsperf';
import { fuzzTcp, fuzzUdp, type PacketSource } from './dns/fuzz';
import { probe, waitAnswered } from './dns/probe';
import { GROUP_SIZE, hostsFile, members, nameTable, queryLines, type Record as DnsRecord, runArgs } from './dns/records';
import { type FuzzResult, renderMarkdown, type Results, type Round, type Target, TARGETS, summaryRows } from './dns/report';

const CONTAINERS = envInt('BENCH_DNS_CONTAINERS', 50, 1);
// The /24 holds them, the client container and the gateway.
if (CONTAINERS > 250) throw new Error(`BENCH_DNS_CONTAINERS=${CONTAINERS}: at most 250`);
const ROUNDS = envInt('BENCH_DNS_ROUNDS', 3, 1);
const SECONDS = envInt('BENCH_DNS_SECONDS', 15, 1);
const FIXED_SECONDS = envInt('BENCH_DNS_FIXED_SECONDS', 10, 1);
const FIXED_QPS = envInt('BENCH_DNS_FIXED_QPS', 10_000, 1);
/** One dnsperf thread: on two cores the load generator then takes one and the server gets the other. */
const CLIENTS = envInt('BENCH_DNS_CLIENTS', 1, 1);
const THREADS = envInt('BENCH_DNS_THREADS', 1, 1);
const OUTSTANDING = envInt('BENCH_DNS_OUTSTANDING', 100, 1);
const FUZZ = envInt('BENCH_DNS_FUZZ', 100_000, 0);
const PORT = envInt('BENCH_DNS_PORT', 53, 1);
const TTL = 5;
/** Which servers to measure (default all), e.g. `dnsmasq,docker,dns2` for a tree whose tsnet has no DNS server. */
const MEASURED: readonly Target[] = (() => {
  const v = process.env.BENCH_DNS_TARGETS;
  if (v === undefined || v === '') return TARGETS;
  const ts = v.split(',').map((x) => x.trim());
  const bad = ts.filter((x) => !TARGETS.some((t) => t === x));
  if (bad.length > 0) throw new Error(`BENCH_DNS_TARGETS=${v}: unknown ${bad.join(', ')} (known: ${TARGETS.join(', ')})`);
  return TARGETS.filter((t) => ts.includes(t));
})();
const measuresTsnet = MEASURED.includes('tsnet') || MEASURED.includes('tsnetGw');
const FUZZ_SEED = envInt('BENCH_DNS_FUZZ_SEED', 20261202, 0);

/** Loopback addresses of their own (nothing leaves the machine), the network's subnet beside the other benches'. */
const ADDR = { tsnet: '127.0.79.1', dnsmasq: '127.0.79.2', dns2: '127.0.79.3' } as const;
const SUBNET = '10.219.0.0/24';
const GATEWAY = '10.219.0.1';
const DOCKER_DNS = '127.0.0.11';

interface Env {
  dockerd: Dockerd;
  docker: Docker;
  tsnet: TsnetProcess;
  dir: string;
  tsnetArgs: string[];
  network: string;
  /** The container whose network namespace dnsperf runs in for Docker's DNS and tsnet's gateway. */
  clientPid: number;
  queryFile: string;
  dnsmasq: Dnsmasq;
  dns2: ChildProcess | undefined;
}

/** tsnet answers the bench's names on a loopback host address and on every bridge gateway; it forwards nothing. */
const tsnetArgsFor = (d: Dockerd): string[] => [
  // The driver's debug lines are no use here, and per-query lines at debug would cost tsnet what it is measured on.
  '--log-level',
  'info',
  '--docker-socket',
  d.socket,
  '--dns-listen',
  'gateways',
  '--dns-listen',
  ADDR.tsnet,
  '--dns-port',
  String(PORT),
  '--dns-upstream',
  'none',
  '--dns-ttl',
  String(TTL),
];

/** Where dnsperf sends each target's queries from, and which process answers them (its CPU is measured). */
function loadOf(env: Env, t: Target): { server: string; netnsPid?: number; serverPid: number | undefined } {
  switch (t) {
    case 'tsnet':
      return { server: ADDR.tsnet, serverPid: env.tsnet.pid };
    case 'tsnetGw':
      return { server: GATEWAY, netnsPid: env.clientPid, serverPid: env.tsnet.pid };
    case 'dnsmasq':
      return { server: ADDR.dnsmasq, serverPid: env.dnsmasq.pid };
    case 'docker':
      return { server: DOCKER_DNS, netnsPid: env.clientPid, serverPid: env.dockerd.pid };
    case 'dns2':
      return { server: ADDR.dns2, serverPid: env.dns2?.pid };
  }
}

function load(env: Env, t: Target, over: Partial<Load>): Load {
  const { server, netnsPid } = loadOf(env, t);
  const port = t === 'docker' ? 53 : PORT;
  const base = { server, port, netnsPid, queryFile: env.queryFile, clients: CLIENTS, threads: THREADS, outstanding: OUTSTANDING };
  return { ...base, seconds: SECONDS, verbose: false, ...over };
}

/** Every query once (`-n 1`): each server must answer all of them NOERROR, or the comparison is not of the same work. */
async function checkAnswers(env: Env, t: Target, lines: number): Promise<void> {
  const r = await dnsperf({ ...load(env, t, { seconds: 30, outstanding: 10, clients: 1, threads: 1 }), maxRuns: 1 });
  if (r.completed !== lines || r.rcodes.NOERROR !== lines) {
    throw new Error(`${t}: ${r.completed}/${lines} queries answered, rcodes ${JSON.stringify(r.rcodes)}: not every bench name resolves`);
  }
}

const rotate = <T>(xs: readonly T[], k: number): T[] => xs.map((_, i) => xs[(i + k) % xs.length]);

async function rounds(env: Env): Promise<Round[]> {
  const out: Round[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    for (const t of rotate(MEASURED, i)) {
      const pid = loadOf(env, t).serverPid;
      const { value: unlimited, ...u } = await withCpu(pid, () => dnsperf(load(env, t, {})));
      const { value: fixed, ...x } = await withCpu(pid, () => dnsperf(load(env, t, { seconds: FIXED_SECONDS, qps: FIXED_QPS, verbose: true })));
      out.push({ target: t, unlimited, server: u, fixed, fixedServer: x });
      progress(
        `round ${i + 1}/${ROUNDS} ${t}: ${unlimited.qps.toFixed(0)} qps (avg ${unlimited.avgMs.toFixed(2)} ms, max ${unlimited.maxMs.toFixed(1)} ms, ` +
          `lost ${unlimited.lost}, CPU ${u.cpuPct} % (sys ${u.sysPct}), runqueue ${u.waitPct} %); @${FIXED_QPS}: p99 ${fixed.latency?.p99Ms.toFixed(3) ?? '?'} ms, ` +
          `max ${fixed.maxMs.toFixed(2)} ms, CPU ${x.cpuPct} % (sys ${x.sysPct}), runqueue ${x.waitPct} %`,
      );
    }
  }
  return out;
}

/** The unit fuzz's generator (test/fuzz/dns-packets.ts), BENCH_DNS_FUZZ packets per transport from one seed each. */
async function fuzz(env: Env): Promise<FuzzResult[]> {
  const out: FuzzResult[] = [];
  for (const [k, transport] of (['udp', 'tcp'] as const).entries()) {
    const rand = prng(FUZZ_SEED + k);
    const source: PacketSource = () => fuzzPacket(rand);
    progress(`fuzz: ${FUZZ} packets over ${transport} at ${ADDR.tsnet}:${PORT}`);
    const sent = transport === 'udp' ? await fuzzUdp(ADDR.tsnet, PORT, source, FUZZ) : await fuzzTcp(ADDR.tsnet, PORT, source, FUZZ);
    const answer = await probe(ADDR.tsnet, PORT, members(tagOf(env), 1)[0].group, 2_000);
    const alive = await tsnetAnswers(env.tsnet);
    out.push({
      transport,
      packets: sent.packets,
      seconds: sent.seconds,
      packetsPerS: sent.packets / sent.seconds,
      replies: sent.replies,
      answersAfter: answer?.rcode === 0 && answer.answers === GROUP_SIZE,
      alive,
      rssKiB: env.tsnet.pid === undefined ? NaN : readRssKiB(env.tsnet.pid),
    });
  }
  return out;
}

const tagOf = (env: Env) => env.network.slice('dnsb'.length);

/**
 * tsnet once more under `node --cpu-prof` for one unlimited run; the profile is written when it exits (SIGTERM, its
 * graceful shutdown). A plain tsnet is started again for the teardown.
 */
async function profile(env: Env, name: string): Promise<NonNullable<Results['profile']>> {
  const profDir = path.join(env.dir, 'cpu-prof');
  fs.mkdirSync(profDir, { recursive: true });
  const opts = { name, stateDir: path.join(env.dir, 'tsnet', 'state'), logFile: path.join(env.dir, 'tsnet', 'tsnet.log'), extraArgs: env.tsnetArgs };
  await env.tsnet.stop();
  const profiled = new TsnetProcess({ ...opts, env: { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profDir}` } });
  env.tsnet = profiled;
  await profiled.start();
  await waitAnswered(ADDR.tsnet, PORT, members(tagOf(env), 1)[0].group, GROUP_SIZE, 10_000);
  const { value, cpuPct } = await withCpu(profiled.pid, () => dnsperf(load(env, 'tsnet', {})));
  await profiled.stop();
  env.tsnet = new TsnetProcess(opts);
  await env.tsnet.start();
  const file = fs.readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error(`no .cpuprofile in ${profDir} after tsnet exited`);
  fs.copyFileSync(path.join(profDir, file), path.join(REPO, '.tmp', 'bench-dns-tsnet.cpuprofile'));
  return { ...topFunctions(readProfile(path.join(profDir, file)), 25), qps: value.qps, cpuPct };
}

/** The records: N containers, then their addresses as dockerd reports them. */
async function makeContainers(docker: Docker, tag: string, network: string): Promise<{ records: DnsRecord[]; clientPid: number }> {
  const ms = members(tag, CONTAINERS);
  for (const m of ms) await docker.docker(['run', '-d', ...runArgs(m, network), BUSYBOX_IMAGE, 'sleep', '86400']);
  const client = `dnsb${tag}-client`;
  await docker.docker(['run', '-d', '--name', client, '--network', network, BUSYBOX_IMAGE, 'sleep', '86400']);
  const ips = new Map(
    (await docker.docker(['network', 'inspect', '-f', '{{range .Containers}}{{.Name}} {{.IPv4Address}}\n{{end}}', network]))
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => {
        const [n, cidr] = l.trim().split(' ');
        return [n, cidr.split('/')[0]] as const;
      }),
  );
  const records = ms.map((m) => {
    const ip = ips.get(m.name);
    if (!ip) throw new Error(`no address of ${m.name} on ${network}`);
    return { ...m, ip };
  });
  const clientPid = Number(await docker.docker(['inspect', '-f', '{{.State.Pid}}', client]));
  return { records, clientPid };
}

function startDns2(dir: string, table: Map<string, string[]>): ChildProcess {
  const tableFile = path.join(dir, 'dns2-table.json');
  fs.writeFileSync(tableFile, JSON.stringify(Object.fromEntries(table)));
  const script = path.join(__dirname, 'dns', 'dns2-server.js');
  return spawnDaemon(process.execPath, [script, ADDR.dns2, String(PORT), tableFile, String(TTL)], { logFile: path.join(dir, 'dns2.log') });
}

async function teardown(env: Partial<Env>, session: Session): Promise<string[]> {
  const steps = teardownSteps();
  const { errors, step } = steps;
  const dockerd = session.dockerd;
  const tsnet = env.tsnet ?? session.tsnet;
  await stopAfterAbort(steps, dockerd, tsnet);
  await step('stop dnsmasq', () => env.dnsmasq?.stop());
  const dns2 = env.dns2;
  if (dns2) await step('stop the dns2 server', () => terminate(dns2, 5_000));
  await reviveDaemons(steps, dockerd, tsnet, env.network !== undefined);
  if (dockerd?.pid !== undefined) {
    // One at a time: dockerd 20.10, removing 50 containers of one network at once (the CLI's `rm -f` of them all),
    // sometimes keeps counting an endpoint of the network that no container has any more, and refuses its removal.
    await step('remove containers', async () => {
      const ids = (await dockerd.docker.docker(['ps', '-aq'])).split('\n').filter((x) => x !== '');
      for (const id of ids) await dockerd.docker.docker(['rm', '-f', id]);
    });
    // dockerd may still be deleting the endpoints of the containers just removed: `network rm` refuses until then.
    // dockerd may still be deleting the endpoints of the containers just removed, and 20.10 can keep a removed
    // container's endpoint on the network for good ("has active endpoints"): those are disconnected by force.
    let refusal = '';
    const network = env.network;
    const removed = async () => {
      try {
        await dockerd.docker.removeCustomNetworks();
        return true;
      } catch (e) {
        refusal = String(e).split('\n').slice(-1)[0];
        if (network === undefined) return false;
        const eps = await dockerd.docker.docker(['network', 'inspect', '-f', '{{range .Containers}}{{.Name}} {{end}}', network]).catch(() => '');
        for (const ep of eps.split(' ').filter((x) => x !== '')) {
          progress(`teardown: endpoint ${ep} still on ${network} after its container went: docker network disconnect -f`);
          await dockerd.docker.dockerTry(['network', 'disconnect', '-f', network, ep]);
        }
        return false;
      }
    };
    await step('remove networks', () => waitFor(removed, 30_000, () => `still refused 30 s after the containers went: ${refusal}`, 1_000));
  }
  if (tsnet) {
    await step('stop tsnet', () => tsnet.stop());
    await step('remove plugin socket', () => fs.rmSync(tsnet.socket, { force: true }));
    // Links of deleted endpoints may still be on their way out while tsnet runs; once it stopped, none may be left.
    const owned = await linksOwnedBy(`tsnet:${tsnet.name}`).catch(() => []);
    if (owned.length > 0) errors.push(`left behind by tsnet: ${owned.join(', ')}`);
  }
  if (dockerd) {
    for (const [log, kept] of [
      [path.join(dockerd.dir, 'tsnet', 'tsnet.log'), 'bench-dns-tsnet.log'],
      [dockerd.logFile, 'bench-dns-dockerd.log'],
    ] as const) {
      await step(`keep ${kept}`, () => fs.existsSync(log) && fs.copyFileSync(log, path.join(REPO, '.tmp', kept)));
    }
    await step('destroy dockerd', () => dockerd.destroy());
  }
  for (const [what, pid] of [
    ['dnsmasq', env.dnsmasq?.pid],
    ['dns2 server', env.dns2?.pid],
  ] as const) {
    if (pid !== undefined && fs.existsSync(`/proc/${pid}`)) errors.push(`left behind: ${what} (pid ${pid})`);
  }
  return errors;
}

const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';

async function main(): Promise<void> {
  const session = await Session.prepare();
  const { started, t0, loadStart } = session;
  fs.mkdirSync(path.join(REPO, '.tmp'), { recursive: true });
  // tsnet turns forwarding on for its bridge network; the host gets back what it had.
  const forwardBefore = fs.readFileSync(IP_FORWARD, 'utf8').trim();
  const env: Partial<Env> = {};
  const base = path.join(RESULTS_DIR, `${started.toISOString().slice(0, 10)}-dns`);
  const measure = async (): Promise<Results> => {
    const { dockerd, docker, tsnet, name } = await session.start(undefined, (d) => (env.tsnetArgs = tsnetArgsFor(d)));
    const tag = randomBytes(2).toString('hex');
    const network = `dnsb${tag}`;
    Object.assign(env, { dockerd, docker, tsnet, dir: dockerd.dir, network });
    await docker.docker(['network', 'create', '-d', name, '--ipam-driver', name, '--subnet', SUBNET, '--gateway', GATEWAY, network]);
    progress(`${CONTAINERS} containers on ${network} (${SUBNET})`);
    const { records, clientPid } = await makeContainers(docker, tag, network);
    const lines = queryLines(records, network);
    const queryFile = path.join(dockerd.dir, 'queries.txt');
    fs.writeFileSync(queryFile, lines.join('\n') + '\n');
    const dnsmasq = new Dnsmasq(dockerd.dir, ADDR.dnsmasq, PORT, TTL);
    Object.assign(env, { clientPid, queryFile, dnsmasq });
    dnsmasq.start(hostsFile(records, network));
    env.dns2 = startDns2(dockerd.dir, nameTable(records, network));
    const e = env as Env;
    const group = records[0].group;
    for (const t of MEASURED) {
      if (t === 'tsnet' || t === 'dnsmasq' || t === 'dns2') await waitAnswered(ADDR[t], PORT, group, GROUP_SIZE, 10_000);
      await checkAnswers(e, t, lines.length);
    }
    const tsnetPid = () => livePid(e.tsnet.pid, 'tsnet');
    const idle = readRssKiB(tsnetPid());
    progress(`every server answers all ${lines.length} names; tsnet idle RSS ${(idle / 1024).toFixed(1)} MiB`);
    const host = await hostFacts(docker);
    const machine = {
      ...host,
      dnsmasq: await cmdOut('dnsmasq', ['--version']),
      dns2: (JSON.parse(fs.readFileSync(path.join(REPO, 'node_modules', 'dns2', 'package.json'), 'utf8')) as { version?: string }).version ?? '?',
    };
    const rs = await rounds(e);
    const afterRuns = readRssKiB(tsnetPid());
    const fz = FUZZ > 0 && measuresTsnet ? await fuzz(e) : [];
    const afterFuzz = fz.length > 0 ? readRssKiB(tsnetPid()) : undefined;
    if (measuresTsnet) progress('profiling tsnet (node --cpu-prof) under one unlimited run');
    const prof = measuresTsnet ? await profile(e, name) : undefined;
    const results: Results = {
      date: started.toISOString(),
      machine,
      setup: {
        containers: CONTAINERS,
        queryNames: lines.length,
        network,
        subnet: SUBNET,
        rounds: ROUNDS,
        seconds: SECONDS,
        fixedSeconds: FIXED_SECONDS,
        fixedQps: FIXED_QPS,
        dnsperf: `dnsperf ${await cmdOut('dpkg-query', ['-W', '-f=${Version}', 'dnsperf'])} -c ${CLIENTS} -T ${THREADS} -q ${OUTSTANDING}`,
      },
      durationS: 0,
      otherDockerdSeen: 0,
      loadavg: { start: loadStart, end: os.loadavg() },
      rounds: rs,
      rssKiB: { idle, afterRuns, afterFuzz },
      fuzz: fz,
      profile: prof,
    };
    // Saved now too, so a failing teardown (reported, and failing the run) does not take the measurements with it.
    saveResults(base, results, renderMarkdown(results));
    return results;
  };
  const results = await measureThenTearDown(t0, measure, async () => {
    const errors = await teardown(env, session);
    session.release();
    fs.writeFileSync(IP_FORWARD, forwardBefore);
    return errors;
  });
  if (!results) return;
  saveResults(base, results, renderMarkdown(results));
  console.log('');
  console.log(textTable(summaryRows(results)));
  console.log('');
  console.log(`results: ${path.relative(REPO, base)}.{json,md} (${results.durationS.toFixed(0)} s)`);
}

// A failure ends the bench at once: leftover children must not keep it alive.
main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
