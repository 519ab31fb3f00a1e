/** iperf3 client runs (`-J`) and what the bench keeps of them. */
import { type RunResult, sleep } from '../../test/harness/exec';
import { checkAborted } from './abort';

/** The host's iperf3 and its libraries, read-only into busybox containers (the image has no iperf3). */
export const IPERF_MOUNTS = ['-v', '/usr/bin/iperf3:/iperf3:ro', '-v', '/usr/lib:/lib:ro', '-v', '/usr/lib64:/lib64:ro'];

export interface IperfRun {
  gbps: number;
  retransmits: number;
  /** iperf3's own CPU figures (percent of one CPU, user + system): sender, receiver. */
  cpuSender: number;
  cpuReceiver: number;
}

export interface IperfJson {
  error?: string;
  end?: {
    sum_sent?: { retransmits?: number };
    sum_received?: { bits_per_second?: number };
    cpu_utilization_percent?: { host_total?: number; remote_total?: number };
  };
}

/**
 * One iperf3 client run (`-J`), retried a few times while the server is not (yet, or again) accepting: a server
 * serves one test at a time and needs a moment after the previous one.
 */
export async function iperfClient(what: string, exec: () => Promise<RunResult>): Promise<IperfRun> {
  let last = '';
  for (let attempt = 0; attempt < 8; attempt++) {
    checkAborted();
    const r = await exec();
    let j: IperfJson | undefined;
    try {
      j = JSON.parse(r.stdout) as IperfJson;
    } catch {
      j = undefined;
    }
    const bps = j?.end?.sum_received?.bits_per_second;
    if (r.code === 0 && j && !j.error && typeof bps === 'number' && bps > 0) {
      return {
        gbps: bps / 1e9,
        retransmits: j.end?.sum_sent?.retransmits ?? NaN,
        cpuSender: j.end?.cpu_utilization_percent?.host_total ?? NaN,
        cpuReceiver: j.end?.cpu_utilization_percent?.remote_total ?? NaN,
      };
    }
    last = j?.error ?? (r.stderr.trim() || r.stdout.trim()).slice(0, 300);
    await sleep(500);
  }
  throw new Error(`iperf3 ${what}: ${last}`);
}

export function iperfArgs(server: string, port: number, seconds: number): string[] {
  return ['-c', server, '-p', String(port), '-t', String(seconds), '-O', '1', '-J'];
}
export const iperfTimeoutMs = (seconds: number) => (seconds + 1) * 1000 + 30_000;
