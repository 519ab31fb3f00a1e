/** The DNS bench's own logic: dnsperf's output, the records every server gets, the profile summary, the ratios. */
import { cpuSeconds, type CpuProfile, runqueueSeconds, topFunctions } from '../../bench/dns/cpu';
import { dnsperfArgv, latencyQuantiles, parseSummary, verboseLatencies } from '../../bench/dns/dnsperf';
import { hostsFile, members, nameTable, queryLines } from '../../bench/dns/records';
import { qpsRatio, type Round, summarize } from '../../bench/dns/report';
import type { DnsperfRun } from '../../bench/dns/dnsperf';

/** dnsperf 2.10.0 against dnsmasq, `-n 2 -v`, as printed. */
const VERBOSE_RUN = `DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.79.2 -p 5399 -d q3 -n 2 -v
[Status] Sending queries (to 127.0.79.2:5399)
[Status] Started at: Wed Dec  2 00:58:24 2026
[Status] Stopping after 2 runs through file
> NOERROR foo A 0.000267
> NOERROR bar A 0.000036
> REFUSED nope A 0.000042
> NOERROR foo A 0.000043
> NOERROR bar A 0.000076
> REFUSED nope A 0.007546
[Status] Testing complete (end of file)

Statistics:

  Queries sent:         6
  Queries completed:    6 (100.00%)
  Queries lost:         0 (0.00%)

  Response codes:       NOERROR 4 (66.67%), REFUSED 2 (33.33%)
  Average packet size:  request 21, response 32
  Run time (s):         0.010142
  Queries per second:   591.599290

  Average Latency (s):  0.001335 (min 0.000036, max 0.007546)
  Latency StdDev (s):   0.003044
`;

test('the summary block gives counts, qps, latencies in ms and every response code', () => {
  const s = parseSummary(VERBOSE_RUN);
  expect(s).toMatchObject({ sent: 6, completed: 6, lost: 0, qps: 591.6, runS: 0.010142, rcodes: { NOERROR: 4, REFUSED: 2 } });
  expect(s.avgMs).toBeCloseTo(1.335, 6);
  expect(s.minMs).toBeCloseTo(0.036, 6);
  expect(s.maxMs).toBeCloseTo(7.546, 6);
  expect(s.stddevMs).toBeCloseTo(3.044, 6);
});

test('output without a summary (dnsperf failed early) is an error, not zeros', () => {
  expect(() => parseSummary('DNS Performance Testing Tool\nError: unable to open file: q\n')).toThrow(/average latency/);
});

test('-v lines give one latency per response; the quantiles are of those, with the counts over 1 and 5 ms', () => {
  const ms = verboseLatencies(VERBOSE_RUN);
  expect(Array.from(ms)).toEqual([0.267, 0.036, 0.042, 0.043, 0.076, 7.546].map((x) => expect.closeTo(x, 9) as number));
  const q = latencyQuantiles(ms);
  expect(q).toMatchObject({ n: 6, maxMs: 7.546, over1Ms: 1, over5Ms: 1 });
  // sorted: 0.036 0.042 0.043 0.076 0.267 7.546; p50 between ranks 2 and 3 (0-based), p99 at 4.95
  expect(q.p50Ms).toBeCloseTo(0.06, 3);
  expect(q.p99Ms).toBeCloseTo(0.267 + 0.95 * (7.546 - 0.267), 3);
});

test('the p99 of 10,000 latencies is the 99th percentile, not the mean or the max', () => {
  const ms = Float64Array.from({ length: 10_000 }, (_, i) => (i < 9_900 ? 0.1 : 2 + i / 10_000));
  const q = latencyQuantiles(ms);
  expect(q.p99Ms).toBeGreaterThan(0.1);
  expect(q.p99Ms).toBeLessThan(2.1);
  expect(q.maxMs).toBeCloseTo(3, 3);
  expect(q.over1Ms).toBe(100);
});

test('dnsperf runs in a container namespace through nsenter, with the rate and -v only when asked', () => {
  const base = { server: '127.0.0.11', port: 53, queryFile: '/q', seconds: 10, clients: 4, threads: 2, outstanding: 200, verbose: false };
  const [cmd, args] = dnsperfArgv({ ...base, netnsPid: 4242 });
  expect(cmd).toBe('nsenter');
  expect(args.slice(0, 5)).toEqual(['-n', '-t', '4242', '--', 'dnsperf']);
  expect(args).not.toContain('-Q');
  expect(args).not.toContain('-v');
  const [cmd2, args2] = dnsperfArgv({ ...base, qps: 10_000, verbose: true, maxRuns: 1 });
  expect(cmd2).toBe('dnsperf');
  expect(args2.join(' ')).toContain('-Q 10000');
  expect(args2.join(' ')).toContain('-n 1');
  expect(args2).toContain('-v');
});

test('every query name is in the hosts file and the dns2 table, with the addresses the containers have', () => {
  const records = members('ab12', 12).map((m, i) => ({ ...m, ip: `10.219.0.${i + 2}` }));
  const table = nameTable(records, 'dnsbab12');
  const lines = queryLines(records, 'dnsbab12');
  const hosts = new Map<string, string[]>();
  for (const line of hostsFile(records, 'dnsbab12').trim().split('\n')) {
    const [ip, ...names] = line.split(' ');
    for (const n of names) hosts.set(n, [...(hosts.get(n) ?? []), ip]);
  }
  expect(hosts).toEqual(table);
  const asked = lines.map((l) => l.replace(/ A$/, ''));
  expect(new Set(asked)).toEqual(new Set(table.keys()));
  expect(asked).toHaveLength(table.size); // each once
  expect(table.get('dnsbab12-c03.dnsbab12')).toEqual(['10.219.0.5']);
  expect(table.get('dnsbab12-g0')).toEqual(['10.219.0.2', '10.219.0.3', '10.219.0.4', '10.219.0.5', '10.219.0.6']);
  expect(table.get('dnsbab12-g2')).toEqual(['10.219.0.12', '10.219.0.13']); // the last, partial group
});

test('the profile summary ranks functions by busy self time, summed over their nodes, idle apart, paths cut to dist/', () => {
  const frame = (functionName: string, url: string, lineNumber: number) => ({ functionName, url, lineNumber });
  const p: CpuProfile = {
    nodes: [
      { id: 1, callFrame: frame('(root)', '', -1), hitCount: 0 },
      { id: 2, callFrame: frame('answer', 'file:///x/y/dist/dns/server.js', 9), hitCount: 30 },
      { id: 3, callFrame: frame('(idle)', '', -1), hitCount: 50 },
      { id: 4, callFrame: frame('answer', 'file:///x/y/dist/dns/server.js', 9), hitCount: 10 },
      { id: 5, callFrame: frame('', 'node:dgram', 99), hitCount: 10 },
    ],
  };
  const t = topFunctions(p, 2);
  expect(t.samples).toBe(100);
  expect(t.idlePct).toBe(50);
  expect(t.rows).toEqual([
    { fn: 'answer dist/dns/server.js:10', selfPct: 80 },
    { fn: '(anonymous) node:dgram:100', selfPct: 20 },
  ]);
});

test("a process's CPU seconds come from /proc/PID/stat and grow with work", () => {
  const before = cpuSeconds(process.pid);
  let x = 0;
  const until = cpuSeconds(process.pid) + 0.05;
  while (cpuSeconds(process.pid) < until) x += Math.sqrt(x + 1);
  expect(x).toBeGreaterThan(0);
  expect(cpuSeconds(process.pid)).toBeGreaterThanOrEqual(before + 0.05);
});

test('qps ratios are of medians over rounds, and also taken within each round', () => {
  const run = (qps: number, maxMs = 1): DnsperfRun => ({ sent: 1, completed: 1, lost: 0, qps, avgMs: 0.5, minMs: 0.1, maxMs, stddevMs: 0, rcodes: {}, runS: 1 });
  const round = (target: Round['target'], qps: number): Round => ({
    target,
    unlimited: run(qps),
    server: { cpuPct: 90, sysPct: 60, waitPct: 5 },
    fixed: run(10_000, qps / 10),
    fixedServer: { cpuPct: 30, sysPct: 20, waitPct: 1 },
  });
  const rounds = [round('tsnet', 60), round('docker', 50), round('tsnet', 80), round('docker', 100), round('tsnet', 70), round('docker', 40)];
  const r = qpsRatio(rounds, 'tsnet', 'docker');
  expect(r.ofMedians).toBe(1.4); // 70 / 50
  expect(r.perRound.min).toBe(0.8);
  expect(r.perRound.max).toBe(1.75);
  const s = summarize(rounds, 'tsnet');
  expect(s.qps.median).toBe(70);
  expect(s.fixed.maxMs.max).toBe(8);
});

test("a process's runqueue wait comes from /proc/PID/schedstat and never decreases", () => {
  const a = runqueueSeconds(process.pid);
  expect(a).toBeGreaterThanOrEqual(0);
  expect(runqueueSeconds(process.pid)).toBeGreaterThanOrEqual(a);
});
