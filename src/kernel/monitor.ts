import { describeChain } from '../errors';
import { log } from '../log';

/** The part of a child process a watcher uses (a stub in unit tests). */
export interface MonitorProcess {
  stdout: { on(event: 'data', cb: (chunk: Buffer | string) => void): unknown } | null;
  on(event: 'exit' | 'error', cb: () => void): unknown;
  kill(): unknown;
}

export interface MonitorWatchOptions {
  /** Starts the long-lived monitor (`ip monitor`, `nft monitor`). */
  spawnMonitor: () => MonitorProcess;
  /** Whether one output line is an event worth an `onChange`. */
  relevant: (line: string) => boolean;
  /** What the monitor is, for logs. */
  label: string;
  /** Events within this window cause one `onChange`. */
  debounceMs: number;
  /** Wait before restarting a monitor that died (each restart also calls `onChange`: events may have been missed). */
  restartMs: number;
  /** Also call `onChange` this often whatever the monitor says (a safety net for events it cannot see). */
  everyMs?: number;
}

/**
 * A long-lived monitor child whose relevant lines are debounced into one `onChange` at a time (one more if events
 * came in while it ran), restarted when it dies. `onChange` failures are logged, never thrown.
 */
export class MonitorWatch {
  private child: MonitorProcess | undefined;
  private timer: NodeJS.Timeout | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private running = false;
  private again = false;
  private stopped = true;
  private partial = '';

  constructor(
    private readonly onChange: () => Promise<void>,
    private readonly opts: MonitorWatchOptions,
  ) {}

  start(): void {
    this.stopped = false;
    this.spawn();
    if (this.opts.everyMs !== undefined && !this.ticker) this.ticker = setInterval(() => this.trigger(), this.opts.everyMs);
  }

  stop(): void {
    this.stopped = true;
    for (const t of [this.timer, this.restartTimer]) clearTimeout(t);
    clearInterval(this.ticker);
    this.ticker = undefined;
    this.child?.kill();
    this.child = undefined;
  }

  /** Calls `onChange` now (coalesced with one already running), e.g. on request. */
  trigger(): void {
    this.timer = undefined;
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void this.onChange()
      .catch((err: unknown) => log.error(`${this.opts.label}: update failed`, { error: describeChain(err) }))
      .finally(() => {
        this.running = false;
        if (this.again) {
          this.again = false;
          this.trigger();
        }
      });
  }

  private spawn(): void {
    this.partial = '';
    const child = this.opts.spawnMonitor();
    this.child = child;
    child.stdout?.on('data', (chunk) => this.onData(String(chunk)));
    // A monitor that cannot be started reports 'error' and may or may not report 'exit': one restart either way.
    const died = () => {
      if (this.stopped || this.child !== child) return;
      log.warn(`${this.opts.label} exited; restarting it`, { restartMs: this.opts.restartMs });
      this.child = undefined;
      this.restartTimer = setTimeout(() => {
        if (this.stopped) return;
        this.spawn();
        this.trigger();
      }, this.opts.restartMs);
    };
    child.on('exit', died);
    child.on('error', died);
  }

  private onData(text: string): void {
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    if (lines.some(this.opts.relevant)) this.schedule();
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.trigger(), this.opts.debounceMs);
  }
}
