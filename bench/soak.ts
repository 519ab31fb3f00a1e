/**
 * tsnet churn soak: one private dockerd (`--iptables=true`) with tsnet as a legacy plugin, and for SOAK_MINUTES
 * (default 30) a cycle every SOAK_CYCLE_MS (default 5,000 ms): `docker network create` (tsnet driver + IPAM) →
 * `docker run -d` on it → `docker network connect` to a long-lived tsnet network → `disconnect` → `rm -f` →
 * `docker network rm`, next to SOAK_STEADY (default 5) containers that live on the long-lived network throughout.
 * Each minute: tsnet's RSS, the docker commands' wall times and tsnet's per-call times (its debug log). At the end:
 * the slopes (least squares) of RSS and of each call's median over the minutes, and the leak check: tsnet's objects
 * (links with its owner tag, nft set/map elements, store records) equal before and after the churn, and none at all
 * once everything is removed.
 *
 * The host lock of the e2e runs (`/tmp/tsnet-dockerd.lock`) is held while dockerd starts and while everything is
 * torn down (forwarding sysctls saved and restored, dockerd's chains set up), not during the churn: a 30-minute hold
 * would stop every other e2e run on the host. Results: bench/results/<date>-soak.{json,md}.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BUSYBOX_IMAGE } from '../test/harness/busybox';
import type { Dockerd } from '../test/harness/dockerd';
import { run, runOk, sleep, waitFor } from '../test/harness/exec';
import { forwardingOn, linksOwnedBy } from '../test/harness/host';
import type { TsnetProcess } from '../test/harness/tsnet';
import { checkAborted } from './lib/abort';
import { envInt, RESULTS_DIR } from './lib/config';
import { hostFacts, livePid, readRssKiB, storeRowsIn } from './lib/host';
import { holdDockerdLock } from './lib/lock';
import { measureThenTearDown, otherDockerdsSeen, progress, saveResults } from './lib/progress';
import { f, mdTable } from './lib/report';
import { Session, type Started } from './lib/session';
import { linearFit, median, r2, stats, type Stats } from './lib/stats';
import { reviveDaemons, stopAfterAbort, teardownSteps } from './lib/teardown';
import { callInstances } from './lib/tsnet-log';

const MINUTES = envInt('SOAK_MINUTES', 30, 1);
const CYCLE_MS = envInt('SOAK_CYCLE_MS', 5_000, 0);
const STEADY = envInt('SOAK_STEADY', 5, 0);
/** Stop after this many failed cycles: a broken tsnet is a result, not something to hammer for half an hour. */
const MAX_FAILURES = 10;

/** Private ranges only; no traffic leaves the host. */
const BASE_SUBNET = '10.218.0.0/24';
const CHURN_SUBNET = '10.218.1.0/24';
const BASE_NET = 'soak-base';

const COMMANDS = ['network create', 'run -d', 'network connect', 'network disconnect', 'rm -f', 'network rm'] as const;
type Command = (typeof COMMANDS)[number];

interface Minute {
  minute: number;
  cycles: number;
  failures: number;
  rssKiB: number;
  loadavg1: number;
  otherDockerds: number;
  /** Median wall ms of each docker command this minute. */
  commands: Partial<Record<Command, number>>;
  /** tsnet's own ms per plugin call this minute (median, p99, n). */
  calls: Partial<Record<string, { n: number; median: number; p99: number }>>;
}

/** What of tsnet's can leak: links by owner tag, nft elements per set/map, store rows per collection. */
interface Objects {
  links: string[];
  nftElements: Record<string, number>;
  storeRows: Partial<Record<string, number>>;
  dockerUserRules: number;
}

interface Results {
  date: string;
  machine: Awaited<ReturnType<typeof hostFacts>> & { minutes: number; cycleMs: number; steady: number };
  durationS: number;
  loadavg: { start: number[]; end: number[] };
  otherDockerdSeen: number;
  lock: string;
  minutes: Minute[];
  cycles: number;
  failures: string[];
  slopes: {
    rssKiBPerMin: number;
    rssKiBPerMinSecondHalf: number;
    rssR2: number;
    callMsPerMin: Record<string, number>;
    commandMsPerMin: Record<string, number>;
  };
  overall: { calls: Partial<Record<string, Stats>>; commands: Partial<Record<string, Stats>> };
  objects: { beforeChurn: Objects; afterChurn: Objects; afterTeardown: Objects; baseline: Objects };
  leaks: string[];
}

type Env = Started;

// ---------------------------------------------------------------------------------------------------------------
// objects

/** Elements per set and map of `family name` (`nft -j`), keyed `family/set`; none when the table is absent. */
async function nftElements(family: string, table: string): Promise<Record<string, number>> {
  const r = await run('nft', ['-j', 'list', 'table', family, table]);
  if (r.code !== 0) return {};
  const out: Record<string, number> = {};
  const parsed = JSON.parse(r.stdout) as { nftables?: unknown[] };
  for (const item of parsed.nftables ?? []) {
    if (typeof item !== 'object' || item === null) continue;
    for (const kind of ['set', 'map'] as const) {
      const s = (item as Record<string, unknown>)[kind] as { name?: unknown; elem?: unknown } | undefined;
      if (s && typeof s.name === 'string') out[`${family}/${s.name}`] = Array.isArray(s.elem) ? s.elem.length : 0;
    }
  }
  return out;
}

async function objects(e: Env): Promise<Objects> {
  let rules = 0;
  for (const bin of ['iptables', 'ip6tables']) {
    const r = await run(bin, ['-w', '-S', 'DOCKER-USER']);
    rules += r.stdout.split('\n').filter((l) => l.includes(`--comment ${e.name} `)).length;
  }
  return {
    links: await linksOwnedBy(`tsnet:${e.name}`),
    nftElements: { ...(await nftElements('inet', e.name)), ...(await nftElements('bridge', e.name)) },
    storeRows: storeRowsIn(path.join(e.dockerd.dir, 'tsnet', 'state')),
    dockerUserRules: rules,
  };
}

/** Differences of `after` from `before`, one line each (empty: nothing leaked). */
function diffObjects(before: Objects, after: Objects, label: string): string[] {
  const out: string[] = [];
  const extra = after.links.filter((l) => !before.links.includes(l));
  const gone = before.links.filter((l) => !after.links.includes(l));
  if (extra.length > 0) out.push(`${label}: ${extra.length} extra links (${extra.slice(0, 5).join(', ')})`);
  if (gone.length > 0) out.push(`${label}: ${gone.length} links gone (${gone.slice(0, 5).join(', ')})`);
  const cmp = (what: string, a: Partial<Record<string, number>>, b: Partial<Record<string, number>>) => {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      if ((a[k] ?? 0) !== (b[k] ?? 0)) out.push(`${label}: ${what} ${k}: ${a[k] ?? 0} → ${b[k] ?? 0}`);
    }
  };
  cmp('nft elements', before.nftElements, after.nftElements);
  cmp('store rows', before.storeRows, after.storeRows);
  if (before.dockerUserRules !== after.dockerUserRules) out.push(`${label}: DOCKER-USER rules ${before.dockerUserRules} → ${after.dockerUserRules}`);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// the churn

async function tsnetNet(e: Env, name: string, subnet: string): Promise<void> {
  await e.docker.docker(['network', 'create', '-d', e.name, '--ipam-driver', e.name, '--subnet', subnet, name]);
}

/** One cycle; wall ms per command into `walls`. A failure cleans up what the cycle made and rethrows. */
async function cycle(e: Env, i: number, walls: Map<Command, number[]>): Promise<void> {
  const net = `soak-n${i}`;
  const ctr = `soak-c${i}`;
  const timed = async (cmd: Command, args: string[]) => {
    checkAborted();
    const t0 = performance.now();
    await e.docker.docker(args);
    walls.get(cmd)?.push(performance.now() - t0);
  };
  try {
    await timed('network create', ['network', 'create', '-d', e.name, '--ipam-driver', e.name, '--subnet', CHURN_SUBNET, net]);
    await timed('run -d', ['run', '-d', '--name', ctr, '--network', net, BUSYBOX_IMAGE, 'sleep', '3600']);
    await timed('network connect', ['network', 'connect', BASE_NET, ctr]);
    await timed('network disconnect', ['network', 'disconnect', BASE_NET, ctr]);
    await timed('rm -f', ['rm', '-f', ctr]);
    await timed('network rm', ['network', 'rm', net]);
  } catch (err) {
    await e.docker.dockerTry(['rm', '-f', ctr]);
    await e.docker.dockerTry(['network', 'rm', net]);
    throw err;
  }
}

function minuteCalls(e: Env, from: number, to: number): Minute['calls'] {
  const byCall = new Map<string, number[]>();
  for (const c of callInstances(e.log.read(from, to))) if (!c.failed && Number.isFinite(c.ms)) byCall.set(c.call, [...(byCall.get(c.call) ?? []), c.ms]);
  return Object.fromEntries(
    [...byCall.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => {
      const s = stats(v);
      return [k, { n: s.n, median: s.median, p99: s.p99 }];
    }),
  );
}

async function churn(e: Env): Promise<{ minutes: Minute[]; cycles: number; failures: string[]; allCalls: Map<string, number[]>; allWalls: Map<Command, number[]> }> {
  const minutes: Minute[] = [];
  const failures: string[] = [];
  const allCalls = new Map<string, number[]>();
  const allWalls = new Map<Command, number[]>(COMMANDS.map((c) => [c, []]));
  const pid = livePid(e.tsnet.pid, 'tsnet');
  let cycles = 0;
  const end = Date.now() + MINUTES * 60_000;
  for (let m = 1; Date.now() < end; m++) {
    const minuteEnd = Math.min(end, Date.now() + 60_000);
    const from = e.log.offset();
    const walls = new Map<Command, number[]>(COMMANDS.map((c) => [c, []]));
    let minuteFailures = 0;
    while (Date.now() < minuteEnd) {
      const t0 = Date.now();
      try {
        await cycle(e, cycles, walls);
      } catch (err) {
        minuteFailures++;
        failures.push(`cycle ${cycles}: ${(err as Error).message.split('\n')[0]}`);
        if (failures.length >= MAX_FAILURES) throw new Error(`${failures.length} failed cycles, the last: ${failures[failures.length - 1]}`);
      }
      cycles++;
      await sleep(Math.max(0, Math.min(minuteEnd - Date.now(), CYCLE_MS - (Date.now() - t0))));
    }
    await sleep(200);
    const calls = minuteCalls(e, from, e.log.offset());
    for (const c of callInstances(e.log.read(from, e.log.offset()))) if (!c.failed) allCalls.set(c.call, [...(allCalls.get(c.call) ?? []), c.ms]);
    for (const [k, v] of walls) allWalls.get(k)?.push(...v);
    const minute: Minute = {
      minute: m,
      cycles: walls.get('rm -f')?.length ?? 0,
      failures: minuteFailures,
      rssKiB: readRssKiB(pid),
      loadavg1: r2(os.loadavg()[0]),
      otherDockerds: otherDockerdsSeen(),
      commands: Object.fromEntries([...walls].filter(([, v]) => v.length > 0).map(([k, v]) => [k, r2(median(v))])),
      calls,
    };
    minutes.push(minute);
    progress(
      `minute ${m}/${MINUTES}: ${minute.cycles} cycles, RSS ${(minute.rssKiB / 1024).toFixed(1)} MiB, CreateEndpoint ${f(calls['NetworkDriver.CreateEndpoint']?.median)} ms, ` +
        `load ${minute.loadavg1}${minuteFailures ? `, ${minuteFailures} failed` : ''}`,
    );
  }
  return { minutes, cycles, failures, allCalls, allWalls };
}

function slopes(minutes: Minute[]): Results['slopes'] {
  const xs = minutes.map((m) => m.minute);
  const rss = linearFit(xs, minutes.map((m) => m.rssKiB));
  const half = minutes.slice(Math.floor(minutes.length / 2));
  const perKey = (keys: string[], value: (m: Minute, k: string) => number | undefined) =>
    Object.fromEntries(
      keys.map((k) => {
        const pts = minutes.flatMap((m) => {
          const v = value(m, k);
          return v === undefined ? [] : [[m.minute, v] as const];
        });
        return [k, Math.round(linearFit(pts.map((p) => p[0]), pts.map((p) => p[1])).slope * 10_000) / 10_000];
      }),
    );
  const callNames = [...new Set(minutes.flatMap((m) => Object.keys(m.calls)))].sort();
  return {
    rssKiBPerMin: r2(rss.slope),
    rssKiBPerMinSecondHalf: r2(linearFit(half.map((m) => m.minute), half.map((m) => m.rssKiB)).slope),
    rssR2: r2(rss.r2),
    callMsPerMin: perKey(callNames, (m, k) => m.calls[k]?.median),
    commandMsPerMin: perKey([...COMMANDS], (m, k) => m.commands[k as Command]),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// report

function renderMarkdown(r: Results): string {
  const m = r.machine;
  const out: string[] = [];
  out.push(`# tsnet churn soak, ${r.date.slice(0, 10)}`);
  out.push('');
  out.push(
    `${m.hostname}: ${m.nproc} CPUs (${m.cpu}), ${m.memoryGiB} GiB, kernel ${m.kernel}; dockerd ${m.dockerd}, node ${m.node}; tsnet ${m.tsnetCommit}. ` +
      `${r.minutes.length} minutes, ${r.cycles} cycles (one every ${m.cycleMs} ms at most: network create → run -d → connect → disconnect → rm -f → network rm), ` +
      `${m.steady} steady containers; ${r.durationS.toFixed(0)} s with setup and teardown.`,
  );
  out.push('');
  out.push(
    `**The machine is shared**: load average ${r.loadavg.start.map((x) => x.toFixed(2)).join(' / ')} at the start, ${r.loadavg.end.map((x) => x.toFixed(2)).join(' / ')} ` +
      `at the end (1/5/15 min; per minute below); up to ${r.otherDockerdSeen} other dockerd process(es) ran meanwhile (other helpers' e2e runs). ${r.lock}`,
  );
  out.push('');
  out.push('## Slopes (least squares over the minutes)');
  out.push('');
  out.push(mdTable([
    ['what', 'slope', 'note'],
    ['tsnet RSS', `${f(r.slopes.rssKiBPerMin)} KiB/min`, `r² ${r.slopes.rssR2}; second half ${f(r.slopes.rssKiBPerMinSecondHalf)} KiB/min; ${f((r.minutes.at(0)?.rssKiB ?? NaN) / 1024)} → ${f((r.minutes.at(-1)?.rssKiB ?? NaN) / 1024)} MiB`],
    ...Object.entries(r.slopes.callMsPerMin).map(([k, v]) => [`\`${k}\` median (tsnet)`, `${v} ms/min`, `overall median ${f(r.overall.calls[k]?.median)} ms, p99 ${f(r.overall.calls[k]?.p99)} ms, n ${r.overall.calls[k]?.n ?? 0}`]),
    ...Object.entries(r.slopes.commandMsPerMin).map(([k, v]) => [`\`docker ${k}\` median (wall)`, `${v} ms/min`, `overall median ${f(r.overall.commands[k]?.median)} ms, p99 ${f(r.overall.commands[k]?.p99)} ms`]),
  ]));
  out.push('');
  out.push('## Leaks');
  out.push('');
  out.push(r.leaks.length === 0 ? 'None: tsnet\'s objects after the churn equal those before it, and after the teardown there are none (no link with its owner tag, no table, no DOCKER-USER rule; store rows as right after start).' : r.leaks.map((l) => `- ${l}`).join('\n'));
  out.push('');
  out.push(mdTable([
    ['when', 'links (owner tag)', 'nft elements', 'store rows', 'DOCKER-USER rules'],
    ...(['baseline', 'beforeChurn', 'afterChurn', 'afterTeardown'] as const).map((k) => {
      const o = r.objects[k];
      const fmt = (x: Partial<Record<string, number>>) => Object.entries(x).map(([a, b]) => `${a} ${b}`).join(', ') || '—';
      return [k, String(o.links.length), fmt(o.nftElements), fmt(o.storeRows), String(o.dockerUserRules)];
    }),
  ]));
  out.push('');
  if (r.failures.length > 0) {
    out.push('## Failed cycles');
    out.push('');
    out.push(r.failures.map((l) => `- ${l}`).join('\n'));
    out.push('');
  }
  out.push('## Per minute');
  out.push('');
  const calls = ['NetworkDriver.CreateNetwork', 'NetworkDriver.CreateEndpoint', 'NetworkDriver.Join', 'NetworkDriver.Leave', 'NetworkDriver.DeleteEndpoint', 'NetworkDriver.DeleteNetwork'];
  out.push(mdTable([
    ['min', 'cycles', 'RSS MiB', 'load', ...calls.map((c) => `${c.replace('NetworkDriver.', '')} ms`), ...COMMANDS.map((c) => `${c} ms`)],
    ...r.minutes.map((x) => [
      String(x.minute),
      String(x.cycles),
      f(x.rssKiB / 1024),
      f(x.loadavg1),
      ...calls.map((c) => f(x.calls[c]?.median)),
      ...COMMANDS.map((c) => f(x.commands[c])),
    ]),
  ]));
  out.push('');
  out.push('tsnet ms: its own "plugin call" log lines (server side). Command ms: wall time of the docker CLI process.');
  out.push('');
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------------------------

async function teardown(env: Partial<Env>, dockerd: Dockerd | undefined, tsnet: TsnetProcess | undefined): Promise<string[]> {
  const steps = teardownSteps();
  const { errors, step } = steps;
  await stopAfterAbort(steps, dockerd, tsnet);
  await reviveDaemons(steps, dockerd, tsnet, true);
  if (dockerd?.pid !== undefined) {
    await step('remove containers', () => dockerd.docker.removeAllContainers());
    await step('remove networks', () => dockerd.docker.removeCustomNetworks());
  }
  if (tsnet && env.name) {
    const owner = `tsnet:${env.name}`;
    await step('wait for tsnet\'s background deletions', () => waitFor(async () => (await linksOwnedBy(owner)).length === 0, 120_000, () => 'links still present after 120 s', 200));
    await step('stop tsnet', () => tsnet.stop());
    await step('remove plugin socket', () => fs.rmSync(tsnet.socket, { force: true }));
    for (const link of await linksOwnedBy(owner)) await step(`left behind, deleted: link ${link}`, () => runOk('ip', ['link', 'del', link]));
    for (const family of ['inet', 'bridge']) {
      if ((await run('nft', ['list', 'table', family, env.name])).code === 0) {
        errors.push(`left behind, deleted: nft table ${family} ${env.name}`);
        await run('nft', ['delete', 'table', family, env.name]);
      }
    }
  }
  if (dockerd) await step('destroy dockerd', () => dockerd.destroy());
  return errors;
}

async function main(): Promise<void> {
  const session = await Session.prepare();
  const { started, t0, loadStart } = session;
  let restoreForwarding: (() => void) | undefined;
  const env: Partial<Env> = {};
  const objs: Partial<Results['objects']> = {};
  /** The teardown's hold, taken by the measurement's own end (so its leak check and the teardown are one hold). */
  let pendingRelease: (() => Promise<void>) | undefined;
  const lockNote =
    'The e2e host lock was held while dockerd and tsnet started and while everything was torn down, not during the churn (other helpers\' runs went on meanwhile).';
  const measure = async (): Promise<Results> => {
    let release = await holdDockerdLock('soak setup');
    let mach: Results['machine'];
    try {
      restoreForwarding = forwardingOn();
      const { dockerd, docker, tsnet, name, log } = await session.start(async () => undefined, (d) => ['--docker-socket', d.socket]);
      Object.assign(env, { dockerd, docker, tsnet, name, log });
      mach = { ...(await hostFacts(docker)), minutes: MINUTES, cycleMs: CYCLE_MS, steady: STEADY };
    } finally {
      await release();
    }
    const e = env as Env;
    objs.baseline = await objects(e);
    await tsnetNet(e, BASE_NET, BASE_SUBNET);
    for (let i = 0; i < STEADY; i++) await e.docker.docker(['run', '-d', '--name', `soak-steady${i}`, '--network', BASE_NET, BUSYBOX_IMAGE, 'sleep', '86400']);
    // One unmeasured cycle first: the first network create/rm pays for the firewall base and JIT warm-up.
    await cycle(e, -1, new Map());
    await sleep(1_000);
    objs.beforeChurn = await objects(e);
    progress(`churn for ${MINUTES} min, a cycle every ${CYCLE_MS} ms, ${STEADY} steady containers`);
    const c = await churn(e);
    await sleep(2_000);
    objs.afterChurn = await objects(e);
    release = await holdDockerdLock('soak teardown');
    try {
      await e.docker.removeAllContainers();
      await e.docker.removeCustomNetworks();
      await waitFor(async () => (await linksOwnedBy(`tsnet:${e.name}`)).length === 0, 60_000, () => 'tsnet links still present 60 s after the last network went', 200);
      // The table goes in the background after the last network (the reaper's job).
      await waitFor(async () => (await run('nft', ['list', 'table', 'inet', e.name])).code !== 0, 30_000, () => 'tsnet table still present 30 s after the last network went', 200).catch(() => undefined);
      objs.afterTeardown = await objects(e);
    } catch (err) {
      await release();
      throw err;
    }
    // The rest of the teardown (tsnet, dockerd, forwarding) runs under this hold too.
    pendingRelease = release;
    const all = objs as Results['objects'];
    const leaks = [...diffObjects(all.beforeChurn, all.afterChurn, 'after the churn'), ...diffObjects(all.baseline, all.afterTeardown, 'after the teardown')];
    if (all.afterTeardown.links.length > 0 || Object.keys(all.afterTeardown.nftElements).length > 0) leaks.push('after the teardown: tsnet objects remain');
    return {
      date: started.toISOString(),
      machine: mach,
      durationS: 0,
      loadavg: { start: loadStart, end: os.loadavg() },
      otherDockerdSeen: 0,
      lock: lockNote,
      minutes: c.minutes,
      cycles: c.cycles,
      failures: c.failures,
      slopes: slopes(c.minutes),
      overall: {
        calls: Object.fromEntries([...c.allCalls].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, stats(v)])),
        commands: Object.fromEntries([...c.allWalls].map(([k, v]) => [k, stats(v)])),
      },
      objects: all,
      leaks: [...new Set(leaks)],
    };
  };
  const results = await measureThenTearDown(t0, measure, async () => {
    const release = pendingRelease ?? (await holdDockerdLock('soak teardown'));
    try {
      const errors = await teardown(env, session.dockerd, session.tsnet);
      restoreForwarding?.();
      session.release();
      return errors;
    } finally {
      await release();
    }
  });
  if (!results) return;
  const base = path.join(RESULTS_DIR, `${started.toISOString().slice(0, 10)}-soak`);
  saveResults(base, results, renderMarkdown(results));
  console.log(`RSS slope ${results.slopes.rssKiBPerMin} KiB/min (second half ${results.slopes.rssKiBPerMinSecondHalf}); leaks: ${results.leaks.length === 0 ? 'none' : results.leaks.join('; ')}`);
  console.log(`results: ${base}.{json,md} (${results.durationS.toFixed(0)} s)`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
