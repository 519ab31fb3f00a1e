/** dnsperf runs (Debian's dnsperf 2.10: no latency histogram, so per-query latencies come from `-v`) and their parsing. */
import { run } from '../../test/harness/exec';
import { checkAborted } from '../lib/abort';
import { quantile, r2 } from '../lib/stats';

export interface Load {
  server: string;
  port: number;
  /** dnsperf's input: one `NAME TYPE` per line, run through in a loop. */
  queryFile: string;
  seconds: number;
  /** `-c`: client sockets; `-T`: threads; `-q`: queries outstanding at most. */
  clients: number;
  threads: number;
  outstanding: number;
  /** `-n`: stop after running through the input this many times (or at `seconds`). */
  maxRuns?: number;
  /** `-Q`: a fixed rate; unlimited when undefined. */
  qps?: number;
  /** `-v`: one line per response with its latency, for the quantiles. */
  verbose: boolean;
  /** Runs dnsperf in this process's network namespace (`nsenter -n -t PID`), e.g. a container's for 127.0.0.11. */
  netnsPid?: number;
}

export interface DnsperfRun {
  sent: number;
  completed: number;
  lost: number;
  qps: number;
  /** dnsperf's own summary, over every completed query. */
  avgMs: number;
  minMs: number;
  maxMs: number;
  stddevMs: number;
  rcodes: Record<string, number>;
  runS: number;
  /** From `-v`: quantiles of the per-response latencies (closest ranks, linear interpolation); undefined without it. */
  latency?: { n: number; p50Ms: number; p99Ms: number; p999Ms: number; maxMs: number; over1Ms: number; over5Ms: number };
}

export function dnsperfArgv(l: Load): [string, string[]] {
  const args = ['-s', l.server, '-p', String(l.port), '-d', l.queryFile, '-l', String(l.seconds), '-c', String(l.clients), '-T', String(l.threads)];
  args.push('-q', String(l.outstanding), '-t', '2');
  if (l.qps !== undefined) args.push('-Q', String(l.qps));
  if (l.maxRuns !== undefined) args.push('-n', String(l.maxRuns));
  if (l.verbose) args.push('-v');
  return l.netnsPid === undefined ? ['dnsperf', args] : ['nsenter', ['-n', '-t', String(l.netnsPid), '--', 'dnsperf', ...args]];
}

const num = (text: string, re: RegExp, what: string): number => {
  const m = re.exec(text);
  if (!m) throw new Error(`dnsperf output has no ${what}`);
  return Number(m[1]);
};

/** The "Statistics:" block dnsperf prints at the end. */
export function parseSummary(text: string): Omit<DnsperfRun, 'latency'> {
  const lat = /Average Latency \(s\):\s+([\d.]+) \(min ([\d.]+), max ([\d.]+)\)/.exec(text);
  if (!lat) throw new Error('dnsperf output has no average latency');
  const rcodes: Record<string, number> = {};
  const codes = /Response codes:\s+(.*)/.exec(text)?.[1] ?? '';
  for (const m of codes.matchAll(/([A-Z]+) (\d+) \(/g)) rcodes[m[1]] = Number(m[2]);
  return {
    sent: num(text, /Queries sent:\s+(\d+)/, 'queries sent'),
    completed: num(text, /Queries completed:\s+(\d+)/, 'queries completed'),
    lost: num(text, /Queries lost:\s+(\d+)/, 'queries lost'),
    qps: r2(num(text, /Queries per second:\s+([\d.]+)/, 'queries per second')),
    avgMs: Number(lat[1]) * 1000,
    minMs: Number(lat[2]) * 1000,
    maxMs: Number(lat[3]) * 1000,
    stddevMs: num(text, /Latency StdDev \(s\):\s+([\d.]+)/, 'latency stddev') * 1000,
    rcodes,
    runS: num(text, /Run time \(s\):\s+([\d.]+)/, 'run time'),
  };
}

/** Latencies (ms) of `-v`'s response lines: `> NOERROR name A 0.000123`. */
export function verboseLatencies(text: string): Float64Array {
  const out: number[] = [];
  const re = /^> \S+ \S+ \S+ ([\d.]+)$/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push(Number(m[1]) * 1000);
  return Float64Array.from(out);
}

export function latencyQuantiles(ms: Float64Array): NonNullable<DnsperfRun['latency']> {
  const s = Float64Array.from(ms).sort();
  const arr = Array.from(s);
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  return {
    n: s.length,
    p50Ms: r3(quantile(arr, 0.5)),
    p99Ms: r3(quantile(arr, 0.99)),
    p999Ms: r3(quantile(arr, 0.999)),
    maxMs: r3(s[s.length - 1] ?? NaN),
    over1Ms: arr.filter((x) => x > 1).length,
    over5Ms: arr.filter((x) => x > 5).length,
  };
}

export async function dnsperf(l: Load): Promise<DnsperfRun> {
  checkAborted();
  const [cmd, args] = dnsperfArgv(l);
  const r = await run(cmd, args, { timeoutMs: (l.seconds + 30) * 1000 });
  if (r.code !== 0) throw new Error(`dnsperf against ${l.server}:${l.port} exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 400)}`);
  const summary = parseSummary(r.stdout);
  return l.verbose ? { ...summary, latency: latencyQuantiles(verboseLatencies(r.stdout)) } : summary;
}
