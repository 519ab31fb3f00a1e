import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { tsnetError } from '../errors';
import { KeyedMutex } from '../mutex';

/** Printed by the marker command; `ip -batch` flushes each command's output, so it arrives as soon as the batch is done. */
const MARKER_CMD = 'link show dev lo';
const MARKER_RE = /^\d+: lo: /m;

export interface BatchFailure {
  /** Index (in the batch) of the line that failed; the lines after it did not run. */
  index: number;
  reason: string;
}

/** How long a batch may go without its marker before ip is presumed stuck (kernel ops take milliseconds). */
const DEFAULT_BATCH_TIMEOUT_MS = 30_000;

/**
 * A long-lived `ip -batch -` process: a batch costs only its kernel time instead of a fork/exec (~2.5-3 ms here).
 * Each batch is followed by a marker command whose output says the batch is done. Without `-force`, ip stops at the
 * first failing line and exits, which is the all-or-prefix behaviour callers rely on; the next batch starts a new
 * process. One batch runs at a time.
 *
 * An ip that cannot be started (ENOENT, EMFILE, EAGAIN), dies without naming a failed line, stops reading or never
 * answers fails the batch with TSN_KERNEL (which lines ran is then unknown); it is killed and the next batch starts
 * a fresh process, so one bad moment never wedges every later kernel change.
 */
export class IpBatchSession {
  private proc: ChildProcessWithoutNullStreams | undefined;
  /** Lines written to the current process so far (ip numbers failures by line since it started). */
  private linesSent = 0;
  private readonly serial = new KeyedMutex();

  /** `command` runs ip, e.g. ['ip'] or ['ip', '-n', 'testns'] (a test's namespace). */
  constructor(
    private readonly command: string[] = ['ip'],
    private readonly timeoutMs = DEFAULT_BATCH_TIMEOUT_MS,
  ) {}

  /** Runs the lines; resolves when all succeeded, or with the first failure; rejects (TSN_KERNEL) if ip misbehaves. */
  run(lines: string[]): Promise<BatchFailure | undefined> {
    return this.serial.run('batch', () => this.runNow(lines));
  }

  private start(): ChildProcessWithoutNullStreams {
    const [bin, ...args] = this.command;
    const proc = spawn(bin, [...args, '-batch', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const forget = () => {
      if (this.proc === proc) this.proc = undefined;
    };
    // Always listened to, so an error between batches is never an unhandled 'error' event; a batch in flight
    // has its own listeners that report it.
    proc.on('error', forget);
    proc.stdin.on('error', forget);
    proc.on('exit', forget);
    this.linesSent = 0;
    this.proc = proc;
    return proc;
  }

  /** Stops a process that can no longer be trusted to be in step with our line count. */
  private discard(proc: ChildProcessWithoutNullStreams): void {
    if (this.proc === proc) this.proc = undefined;
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  }

  private failed(what: string, cause?: unknown): Error {
    return tsnetError('TSN_KERNEL', `ip -batch (${this.command[0]}) ${what}`, cause);
  }

  private runNow(lines: string[]): Promise<BatchFailure | undefined> {
    let proc: ChildProcessWithoutNullStreams;
    try {
      proc = this.proc ?? this.start();
    } catch (err) {
      return Promise.reject(this.failed('could not be started', err));
    }
    const first = this.linesSent + 1;
    this.linesSent += lines.length + 1;
    return new Promise((resolve, reject) => {
      let out = '';
      let err = '';
      let settled = false;
      const onOut = (d: Buffer) => {
        out += d.toString();
        // stderr of a failed line is written before the marker runs; setImmediate lets this poll phase deliver it.
        if (MARKER_RE.test(out)) setImmediate(() => finish(undefined));
      };
      const onErr = (d: Buffer) => {
        err += d.toString();
      };
      const onExit = (code: number | null, signal: string | null) => {
        const m = /Command failed -:(\d+)/.exec(err);
        if (!m) {
          finish(this.failed(`exited (code ${code}, signal ${signal}) without naming a failed line: ${err.trim().slice(0, 500)}`));
          return;
        }
        const reason = err.split('\n').filter((l) => l && !l.startsWith('Command failed')).join('; ') || `exit ${code}`;
        finish({ index: Number(m[1]) - first, reason });
      };
      // Spawn failure, or a write to an ip that is gone.
      const onError = (e: Error) => finish(this.failed('could not be run', e));
      const timer = setTimeout(() => finish(this.failed(`gave no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      const finish = (result: BatchFailure | Error | undefined) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        proc.stdout.off('data', onOut);
        proc.stderr.off('data', onErr);
        proc.off('exit', onExit);
        proc.off('error', onError);
        proc.stdin.off('error', onError);
        if (result instanceof Error) {
          this.discard(proc);
          reject(result);
        } else resolve(result);
      };
      proc.stdout.on('data', onOut);
      proc.stderr.on('data', onErr);
      proc.on('exit', onExit);
      proc.on('error', onError);
      proc.stdin.on('error', onError);
      proc.stdin.write([...lines, MARKER_CMD].join('\n') + '\n');
    });
  }

  /**
   * The next batch runs in a fresh ip: one ip caches link names' indexes, so a link another process deleted and
   * made again under the same name (tsnet's background lane, an operator) stays unknown to it ("No such device").
   * Queued behind the batch in flight, like a batch.
   */
  renew(): Promise<void> {
    return this.serial.run('batch', () => {
      this.close();
      return Promise.resolve();
    });
  }

  /** Ends the process (at shutdown). */
  close(): void {
    this.proc?.stdin.end();
    this.proc = undefined;
  }
}
