/**
 * Continuous traffic for restart tests, with the host's tools run inside a network namespace: a container's
 * (`nsenter -t PID -n`: the test image is busybox) or a named one (a LAN peer). A fixed-rate ping that names the
 * sequence numbers it lost, iperf3 TCP streams reporting every interval, and a prober opening a new TCP connection
 * every few milliseconds (each one needs the NAT rules, where an established stream lives on in conntrack).
 */
import path from 'node:path';
import { eventually, run, spawnDaemon, terminate } from './exec';

/** Where a tool runs: a container's network namespace (its pid), a named namespace, or the host itself. */
export type Where = { pid: number } | { netns: string } | 'host';

/** argv running `cmd args` in `where`'s network namespace. */
export function inNs(where: Where, cmd: string, args: readonly string[]): [string, string[]] {
  if (where === 'host') return [cmd, [...args]];
  if ('pid' in where) return ['nsenter', ['-t', String(where.pid), '-n', cmd, ...args]];
  return ['ip', ['netns', 'exec', where.netns, cmd, ...args]];
}

/** What one ping run saw: `lost` are the sequence numbers never answered (0-based, one every 1/pps s). */
export interface PingResult {
  sent: number;
  received: number;
  lost: number[];
  pps: number;
}

/**
 * Sends `pps × seconds` pings (busybox's ping, one every 1/pps s whatever the answers) to `target`, each waiting
 * ≤ 1 s for its reply; resolves when the last one is answered or timed out.
 */
export async function pingRun(where: Where, target: string, pps: number, seconds: number): Promise<PingResult> {
  const count = Math.round(pps * seconds);
  const [cmd, args] = inNs(where, '/bin/busybox', ['ping', '-c', String(count), '-i', String(1 / pps), '-W', '1', target]);
  const { stdout } = await run(cmd, args, { timeoutMs: (seconds + 15) * 1000 });
  const answered = new Set([...stdout.matchAll(/seq=(\d+) /g)].map((m) => Number(m[1])));
  const summary = /(\d+) packets transmitted, (\d+) packets received/.exec(stdout);
  if (!summary) throw new Error(`${[cmd, ...args].join(' ')}: no summary in its output:\n${stdout.slice(-500)}`);
  const sent = Number(summary[1]);
  const lost = Array.from({ length: sent }, (_v, i) => i).filter((seq) => !answered.has(seq));
  return { sent, received: Number(summary[2]), lost, pps };
}

/** Lost sequence numbers as time ranges (ms after the first ping), e.g. `3010-3090 ms (9)`, for failure messages. */
export function describeLoss(r: PingResult): string {
  const ranges: Array<[number, number]> = [];
  for (const seq of r.lost) {
    const last = ranges.at(-1);
    if (last && seq === last[1] + 1) last[1] = seq;
    else ranges.push([seq, seq]);
  }
  const ms = (seq: number) => Math.round((seq * 1000) / r.pps);
  return ranges.map(([a, b]) => `${ms(a)}-${ms(b)} ms (${b - a + 1})`).join(', ') || 'none';
}

/** One iperf3 reporting interval, seconds from the start of the test. */
export interface StreamInterval {
  start: number;
  end: number;
  bytes: number;
}

export interface StreamResult {
  intervals: StreamInterval[];
  retransmits: number;
  /** iperf3's error, when the test failed (e.g. the control connection broke). */
  error?: string;
}

interface IperfJson {
  error?: string;
  intervals?: Array<{ sum: StreamInterval }>;
  end?: { sum_sent?: { retransmits?: number } };
}

/** Intervals of a stream that carried no data (a stall), ignoring a last stub iperf3 reports under 10% of `intervalS`. */
export function stalls(r: StreamResult, intervalS: number): StreamInterval[] {
  return r.intervals.filter((iv) => iv.bytes === 0 && iv.end - iv.start >= intervalS / 10);
}

/** A server process started in a namespace; also killed at process exit (spawnDaemon) if a test never stops it. */
export interface Server {
  stop(): Promise<void>;
}

async function serve(where: Where, cmd: string, args: readonly string[], port: number, logFile: string): Promise<Server> {
  const [file, argv] = inNs(where, cmd, args);
  const child = spawnDaemon(file, argv, { logFile });
  const server = {
    stop: async () => {
      await terminate(child, 2_000);
    },
  };
  try {
    const [ss, ssArgs] = inNs(where, 'ss', ['-ltnH', `sport = :${port}`]);
    await eventually(async () => expect((await run(ss, ssArgs)).stdout).toContain(`:${port}`), 10_000, 50);
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}

/** An iperf3 server for one test (`-1`) in `where` on `port`, listening when this resolves. */
export function iperfServer(where: Where, port: number, logDir: string): Promise<Server> {
  return serve(where, 'iperf3', ['-s', '-1', '-p', String(port)], port, path.join(logDir, `iperf3-server-${port}.log`));
}

/** A TCP server in `where` that accepts and closes every connection (the target of {@link connectProbe}). */
export function acceptServer(where: Where, port: number, logDir: string): Promise<Server> {
  const script = `require('net').createServer(s=>s.end()).listen(${port})`;
  return serve(where, process.execPath, ['-e', script], port, path.join(logDir, `accept-${port}.log`));
}

/**
 * An iperf3 TCP stream from `where` to host:port for `seconds` at `bitsPerSecond`, one report every `intervalS`.
 * Resolves with every interval; a failed test resolves too, with iperf3's error.
 */
export async function iperfRun(where: Where, host: string, port: number, seconds: number, intervalS: number, bitsPerSecond: number): Promise<StreamResult> {
  const [cmd, args] = inNs(where, 'iperf3', ['-c', host, '-p', String(port), '-t', String(seconds), '-i', String(intervalS), '-b', String(bitsPerSecond), '--connect-timeout', '3000', '-J']);
  const res = await run(cmd, args, { timeoutMs: (seconds + 20) * 1000 });
  let parsed: IperfJson;
  try {
    parsed = JSON.parse(res.stdout) as IperfJson;
  } catch {
    return { intervals: [], retransmits: 0, error: `exit ${res.code}, not JSON: ${res.stdout.slice(0, 300)} ${res.stderr.slice(0, 300)}` };
  }
  return {
    intervals: (parsed.intervals ?? []).map((iv) => ({ start: iv.sum.start, end: iv.sum.end, bytes: iv.sum.bytes })),
    retransmits: parsed.end?.sum_sent?.retransmits ?? 0,
    ...(parsed.error !== undefined ? { error: parsed.error } : res.code !== 0 ? { error: `exit code ${res.code}` } : {}),
  };
}

/** A new TCP connection every `everyMs` for `seconds`: how many were tried, and when (ms after the first) those failed. */
export interface ProbeResult {
  attempts: number;
  failures: Array<{ atMs: number; error: string }>;
}

/**
 * Opens a connection from `where` to host:port every `everyMs` (each given 1 s to be accepted) for `seconds`; the
 * server ({@link acceptServer}, or anything listening) may close it at once.
 */
export async function connectProbe(where: Where, host: string, port: number, seconds: number, everyMs: number): Promise<ProbeResult> {
  const script = `
const net = require('net'); const t0 = Date.now(); const failures = []; let attempts = 0, open = 0, done = false;
const finish = () => { if (done && open === 0) { process.stdout.write(JSON.stringify({ attempts, failures })); process.exit(0); } };
const fail = (at, error) => failures.push({ atMs: at, error });
const tick = setInterval(() => {
  if (Date.now() - t0 >= ${seconds * 1000}) { clearInterval(tick); done = true; finish(); return; }
  attempts++; open++; const at = Date.now() - t0; let settled = false;
  const settle = (err) => { if (settled) return; settled = true; if (err) fail(at, err); s.destroy(); open--; finish(); };
  const s = net.connect(${port}, ${JSON.stringify(host)});
  s.setTimeout(1000, () => settle('timeout'));
  s.on('connect', () => settle());
  s.on('error', (e) => settle(e.code || e.message));
}, ${everyMs});`;
  const [cmd, args] = inNs(where, process.execPath, ['-e', script]);
  const res = await run(cmd, args, { timeoutMs: (seconds + 15) * 1000 });
  if (res.code !== 0) throw new Error(`connect probe to ${host}:${port} failed (exit ${res.code}): ${res.stderr.slice(0, 500)}`);
  return JSON.parse(res.stdout) as ProbeResult;
}
