import { spawn } from 'node:child_process';
import { describeChain } from '../errors';
import { log } from '../log';
import { isDockerBridgeName } from './names';

/** The part of a child process the watcher uses (a stub in unit tests). */
export interface MonitorProcess {
  stdout: { on(event: 'data', cb: (chunk: Buffer | string) => void): unknown } | null;
  on(event: 'exit', cb: () => void): unknown;
  kill(): unknown;
}

export interface LinkWatchOptions {
  spawnMonitor?: () => MonitorProcess;
  /** Events within this window cause one re-read. */
  debounceMs?: number;
  /** Wait before restarting a monitor that died. */
  restartMs?: number;
}

/**
 * The interface name of one `ip -o monitor link` line ("[Deleted ]<index>: <name>[@<peer>]: <flags> ..."), or
 * undefined for lines of another shape.
 */
export function monitorLinkName(line: string): string | undefined {
  return /^(?:Deleted )?\d+: ([^:@\s]+)(?:@\S*)?: /.exec(line)?.[1];
}

/**
 * Keeps Docker's bridges current while tsnet runs: a long-lived `ip -o monitor link`, restarted if it dies. Only
 * events naming a Docker-style bridge (docker0, br-<12 hex>) count, so tsnet's own veth churn costs nothing; they
 * are debounced into one `onChange` at a time (one more if events came in while it ran). A restart also calls
 * `onChange`, as events may have been missed meanwhile.
 */
export class LinkWatcher {
  private child: MonitorProcess | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private again = false;
  private stopped = false;
  private partial = '';
  private readonly spawnMonitor: () => MonitorProcess;
  private readonly debounceMs: number;
  private readonly restartMs: number;

  constructor(
    private readonly onChange: () => Promise<void>,
    opts: LinkWatchOptions = {},
  ) {
    this.spawnMonitor = opts.spawnMonitor ?? (() => spawn('ip', ['-o', 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] }));
    this.debounceMs = opts.debounceMs ?? 200;
    this.restartMs = opts.restartMs ?? 1000;
  }

  start(): void {
    this.stopped = false;
    this.partial = '';
    const child = this.spawnMonitor();
    this.child = child;
    child.stdout?.on('data', (chunk) => this.onData(String(chunk)));
    child.on('exit', () => {
      if (this.stopped || this.child !== child) return;
      log.warn('link monitor exited; restarting it', { restartMs: this.restartMs });
      this.child = undefined;
      this.timer = setTimeout(() => {
        if (this.stopped) return;
        this.start();
        this.trigger();
      }, this.restartMs);
    });
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.child?.kill();
    this.child = undefined;
  }

  private onData(text: string): void {
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    if (lines.some((l) => isDockerBridgeName(monitorLinkName(l) ?? ''))) this.schedule();
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.trigger(), this.debounceMs);
  }

  private trigger(): void {
    this.timer = undefined;
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void this.onChange()
      .catch((err: unknown) => log.error('updating Docker bridges failed', { error: describeChain(err) }))
      .finally(() => {
        this.running = false;
        if (this.again) {
          this.again = false;
          this.trigger();
        }
      });
  }
}
