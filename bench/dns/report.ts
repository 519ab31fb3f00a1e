/** The DNS bench's results: what is kept, the ratios and targets, and the markdown. */
import { f, mdTable, ok, okMin } from '../lib/report';
import { median, ratio, type Stats, stats } from '../lib/stats';
import type { CpuShare, ProfileRow } from './cpu';
import type { DnsperfRun } from './dnsperf';

/**
 * Who answers: tsnet on its host listener (from the host), tsnet on the network's gateway (from inside a container,
 * as containers use it), dnsmasq and the dns2 server (from the host), Docker's embedded DNS (127.0.0.11, inside a
 * container).
 */
export const TARGETS = ['tsnet', 'tsnetGw', 'dnsmasq', 'docker', 'dns2'] as const;
export type Target = (typeof TARGETS)[number];

export const TARGET_LABEL: Record<Target, string> = {
  tsnet: 'tsnet (host listener)',
  tsnetGw: 'tsnet (gateway, from a container)',
  dnsmasq: 'dnsmasq (hosts file)',
  docker: "Docker's embedded DNS (127.0.0.11, from a container)",
  dns2: 'dns2 3.1.1 UDPServer',
};

export interface Round {
  target: Target;
  unlimited: DnsperfRun;
  /** The answering process (tsnet, dnsmasq, dockerd, the dns2 node) during the unlimited run. */
  server: CpuShare;
  fixed: DnsperfRun;
  /** The same during the fixed-rate run. */
  fixedServer: CpuShare;
}

export interface FuzzResult {
  transport: 'udp' | 'tcp';
  packets: number;
  seconds: number;
  packetsPerS: number;
  /** Replies the bench saw (UDP) or bytes back (TCP): tsnet answering FORMERR or dropping are both fine. */
  replies: number;
  answersAfter: boolean;
  alive: boolean;
  rssKiB: number;
}

export interface Results {
  date: string;
  machine: Record<string, unknown>;
  setup: { containers: number; queryNames: number; network: string; subnet: string; rounds: number; seconds: number; fixedSeconds: number; fixedQps: number; dnsperf: string };
  durationS: number;
  otherDockerdSeen: number;
  loadavg: { start: number[]; end: number[] };
  rounds: Round[];
  rssKiB: { idle: number; afterRuns: number; afterFuzz?: number };
  fuzz: FuzzResult[];
  profile?: { samples: number; idlePct: number; qps: number; cpuPct: number; rows: ProfileRow[] };
}

export interface TargetSummary {
  qps: Stats;
  avgMs: Stats;
  maxMs: Stats;
  lost: number;
  cpuPct: Stats;
  sysPct: Stats;
  waitPct: Stats;
  fixed: { qps: Stats; avgMs: Stats; p99Ms: Stats; p999Ms: Stats; maxMs: Stats; over1Ms: number; over5Ms: number; lost: number; n: number };
}

export function summarize(rounds: readonly Round[], t: Target): TargetSummary {
  const rs = rounds.filter((r) => r.target === t);
  const u = rs.map((r) => r.unlimited);
  const x = rs.map((r) => r.fixed);
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  return {
    qps: stats(u.map((r) => r.qps)),
    avgMs: stats(u.map((r) => r.avgMs)),
    maxMs: stats(u.map((r) => r.maxMs)),
    lost: sum(u.map((r) => r.lost)),
    cpuPct: stats(rs.map((r) => r.server.cpuPct)),
    sysPct: stats(rs.map((r) => r.server.sysPct)),
    waitPct: stats(rs.map((r) => r.server.waitPct)),
    fixed: {
      qps: stats(x.map((r) => r.qps)),
      avgMs: stats(x.map((r) => r.avgMs)),
      p99Ms: stats(x.map((r) => r.latency?.p99Ms ?? NaN)),
      p999Ms: stats(x.map((r) => r.latency?.p999Ms ?? NaN)),
      maxMs: stats(x.map((r) => r.maxMs)),
      over1Ms: sum(x.map((r) => r.latency?.over1Ms ?? 0)),
      over5Ms: sum(x.map((r) => r.latency?.over5Ms ?? 0)),
      lost: sum(x.map((r) => r.lost)),
      n: sum(x.map((r) => r.latency?.n ?? 0)),
    },
  };
}

/** Ratios of median unlimited qps, and the same taken within each round (both under that round's load). */
export function qpsRatio(rounds: readonly Round[], a: Target, b: Target): { ofMedians: number; perRound: Stats } {
  const qa = rounds.filter((r) => r.target === a).map((r) => r.unlimited.qps);
  const qb = rounds.filter((r) => r.target === b).map((r) => r.unlimited.qps);
  return { ofMedians: ratio(median(qa), median(qb)), perRound: stats(qa.map((x, i) => ratio(x, qb[i]))) };
}

const RATIOS: Array<[Target, Target]> = [
  ['tsnet', 'docker'],
  ['tsnetGw', 'docker'],
  ['tsnet', 'dnsmasq'],
  ['tsnet', 'dns2'],
];

const range = (s: Stats) => `${f(s.median)} (${f(s.min)}–${f(s.max)})`;

const measured = (r: Results): Target[] => TARGETS.filter((t) => r.rounds.some((x) => x.target === t));

export function summaryRows(r: Results): string[][] {
  return [
    ['server', 'unlimited qps', 'avg ms', 'max ms', `p99 ms @${r.setup.fixedQps}`, `max ms @${r.setup.fixedQps}`, 'lost'],
    ...measured(r).map((t) => {
      const s = summarize(r.rounds, t);
      return [TARGET_LABEL[t], f(s.qps.median), f(s.avgMs.median), f(s.maxMs.max), f(s.fixed.p99Ms.max), f(s.fixed.maxMs.max), String(s.lost + s.fixed.lost)];
    }),
  ];
}

export function renderMarkdown(r: Results): string {
  const m = r.machine;
  const sums = Object.fromEntries(TARGETS.map((t) => [t, summarize(r.rounds, t)])) as Record<Target, TargetSummary>;
  const ts = sums.tsnet;
  const dockerRatio = qpsRatio(r.rounds, 'tsnet', 'docker');
  const out: string[] = [
    `# DNS bench ${r.date.slice(0, 10)}`,
    '',
    `${String(m.hostname)}: ${String(m.nproc)} cores (${String(m.cpu)}), ${String(m.memoryGiB)} GiB, kernel ${String(m.kernel)}; dockerd ${String(m.dockerd)}, ` +
      `node ${String(m.node)}, ${r.setup.dnsperf}, ${String(m.dnsmasq)}, dns2 ${String(m.dns2)}; tsnet ${String(m.tsnetCommit)}. ` +
      `Load average ${r.loadavg.start.map((x) => x.toFixed(2)).join(' ')} at start, ${r.loadavg.end.map((x) => x.toFixed(2)).join(' ')} at the end; ` +
      `${r.durationS.toFixed(0)} s.` +
      (r.otherDockerdSeen > 0 ? ` **${r.otherDockerdSeen} other dockerd(s) ran meanwhile** (e2e suites): the numbers carry their load.` : ''),
    '',
    `${r.setup.containers} containers on the tsnet network \`${r.setup.network}\` (${r.setup.subnet}), each with its name, an alias of its own and a ` +
      `group alias shared by 5; ${r.setup.queryNames} A queries (NAME, ALIAS, NAME.NETWORK, GROUP), the same file for every server, run ` +
      `through in a loop. ${r.setup.rounds} rounds; each round runs every server in a rotating order: ${r.setup.seconds} s at unlimited rate, ` +
      `then ${r.setup.fixedSeconds} s at \`-Q ${r.setup.fixedQps}\` with \`-v\`.`,
    '',
    '## Targets',
    '',
    mdTable([
      ['target', 'measured', 'met'],
      ['unlimited qps ≥ 1.0 × Docker (ratio of medians)', `${dockerRatio.ofMedians} (per round ${f(dockerRatio.perRound.min)}–${f(dockerRatio.perRound.max)})`, okMin(dockerRatio.ofMedians, 1)],
      [`p99 ≤ 1 ms at ${r.setup.fixedQps} qps (worst round)`, `${f(ts.fixed.p99Ms.max)} ms`, ok(ts.fixed.p99Ms.max, 1)],
      [`max ≤ 5 ms at ${r.setup.fixedQps} qps (worst round)`, `${f(ts.fixed.maxMs.max)} ms`, ok(ts.fixed.maxMs.max, 5)],
      ['reach for dnsmasq', `${qpsRatio(r.rounds, 'tsnet', 'dnsmasq').ofMedians} × dnsmasq`, '—'],
    ]),
    '',
    '## Unlimited rate',
    '',
    mdTable([
      ['server', 'qps median (min–max)', 'avg ms', 'max ms (worst round)', 'lost', "server's CPU, % of a core", 'of it in the kernel', 'its main thread waiting for a CPU, %'],
      ...measured(r).map((t) => {
        const s = sums[t];
        return [TARGET_LABEL[t], range(s.qps), f(s.avgMs.median), f(s.maxMs.max), String(s.lost), range(s.cpuPct), f(s.sysPct.median), range(s.waitPct)];
      }),
    ]),
    '',
    mdTable([
      ['ratio of qps', 'of medians', 'within rounds, median (min–max)'],
      ...RATIOS.map(([a, b]) => {
        const q = qpsRatio(r.rounds, a, b);
        return [`${a} / ${b}`, String(q.ofMedians), range(q.perRound)];
      }),
    ]),
    '',
    `## Fixed rate, ${r.setup.fixedQps} qps`,
    '',
    mdTable([
      ['server', 'qps', 'avg ms', 'p99 ms median (worst)', 'p99.9 ms (worst)', 'max ms (worst)', '> 1 ms', '> 5 ms', 'responses', 'lost'],
      ...measured(r).map((t) => {
        const s = sums[t].fixed;
        return [
          TARGET_LABEL[t],
          f(s.qps.median),
          f(s.avgMs.median),
          `${f(s.p99Ms.median)} (${f(s.p99Ms.max)})`,
          f(s.p999Ms.max),
          f(s.maxMs.max),
          String(s.over1Ms),
          String(s.over5Ms),
          String(s.n),
          String(s.lost),
        ];
      }),
    ]),
    '',
    'p99 and p99.9: quantiles (closest ranks, linear interpolation) of the per-response latencies dnsperf prints with `-v` ' +
      '(its 2.10 has no histogram), per round; max and avg are dnsperf\'s own summary. At unlimited rate latency is set by ' +
      'dnsperf\'s `-q` (queries outstanding) over the qps, so only avg and max are given there.',
    '',
    '## Memory and fuzz',
    '',
    mdTable([
      ["tsnet's VmRSS", 'MiB'],
      ['idle (network, containers, records loaded)', f(r.rssKiB.idle / 1024)],
      ['after the dnsperf rounds', f(r.rssKiB.afterRuns / 1024)],
      ['after the fuzz', f((r.rssKiB.afterFuzz ?? NaN) / 1024)],
    ]),
    '',
    mdTable([
      ['fuzz', 'packets', 'seconds', 'packets/s', 'replies seen', 'answers afterwards', 'alive', 'RSS MiB'],
      ...r.fuzz.map((z) => [z.transport, String(z.packets), f(z.seconds), f(z.packetsPerS), String(z.replies), z.answersAfter ? 'yes' : '**no**', z.alive ? 'yes' : '**no**', f(z.rssKiB / 1024)]),
    ]),
    '',
  ];
  if (r.profile) {
    out.push(
      '## Where the time goes',
      '',
      `\`node --cpu-prof\` of tsnet under one unlimited run (${r.profile.qps.toFixed(0)} qps, ${r.profile.cpuPct} % of a core; ` +
        `${r.profile.samples} samples over tsnet's life, ${r.profile.idlePct} % of them idle (start-up, before and after the load); ` +
        `self time per function as a share of the busy samples, top ${r.profile.rows.length}):`,
      '',
      mdTable([['function', 'self %'], ...r.profile.rows.map((x) => [`\`${x.fn}\``, x.selfPct.toFixed(1)])]),
      '',
    );
  }
  out.push(
    '## Every round',
    '',
    mdTable([
      ['round', 'server', 'qps', 'avg ms', 'max ms', 'lost', 'CPU %', 'sys %', 'wait %', `p99 ms @${r.setup.fixedQps}`, `max ms @${r.setup.fixedQps}`, 'CPU %', 'sys %', 'wait %', 'rcodes'],
      ...r.rounds.map((x, i) => [
        String(Math.floor(i / measured(r).length) + 1),
        x.target,
        f(x.unlimited.qps),
        f(x.unlimited.avgMs),
        f(x.unlimited.maxMs),
        String(x.unlimited.lost),
        f(x.server.cpuPct),
        f(x.server.sysPct),
        f(x.server.waitPct),
        f(x.fixed.latency?.p99Ms),
        f(x.fixed.maxMs),
        f(x.fixedServer.cpuPct),
        f(x.fixedServer.sysPct),
        f(x.fixedServer.waitPct),
        Object.entries(x.unlimited.rcodes)
          .map(([k, v]) => `${k} ${v}`)
          .join(', '),
      ]),
    ]),
    '',
  );
  return out.join('\n');
}
