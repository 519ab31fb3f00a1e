import { asTsnetError, describeChain, tsnetError } from './errors';
import { log } from './log';

/** How a started component is stopped. */
export type Stop = () => Promise<void> | void;

/** What a started component can be asked to do: stop, and (SIGHUP) reload what can change without a restart. */
export interface Handle {
  stop?: Stop;
  reload?: () => Promise<void>;
}

/**
 * One part of the running tsnet. `start` returns what stops it (or a {@link Handle}), so a component holds its own
 * handles and adding one to the lifecycle is one line.
 */
export interface Component {
  name: string;
  start(): Promise<Started | undefined> | Promise<void> | Started | undefined;
}

/** What a component's start may return (nothing: nothing to stop or reload). */
export type Started = Stop | Handle;

interface Running extends Handle {
  name: string;
}

/**
 * Starts components in their declared order and stops them in reverse, each timed in the log. A start that fails
 * stops what started (in reverse) and rethrows naming the component; a stop that fails is logged and the rest
 * still stop. A stop during start waits for the component starting then, and starts no further one.
 */
export class Lifecycle {
  private readonly components: Component[] = [];
  private readonly started: Running[] = [];
  private stopping: Promise<boolean> | undefined;
  /** The start in progress: a stop waits for it, so a component that finishes starting is stopped too. */
  private current: Promise<void> | undefined;

  constructor(private readonly clock: () => number = () => performance.now()) {}

  add(c: Component): this {
    this.components.push(c);
    return this;
  }

  /** True when every component started; false when a stop came first (what started is being stopped). */
  async start(): Promise<boolean> {
    for (const c of this.components) {
      if (this.stopping) return false;
      const t0 = this.clock();
      this.current = (async () => {
        const h = await c.start();
        this.started.push(typeof h === 'function' ? { name: c.name, stop: h } : { name: c.name, ...h });
      })();
      try {
        await this.current;
      } catch (err) {
        log.error('component failed to start', { component: c.name, ms: this.since(t0), error: describeChain(err) });
        await this.stop();
        throw tsnetError(asTsnetError(err).code, `starting ${c.name} failed`, err);
      }
      log.info('component started', { component: c.name, ms: this.since(t0) });
    }
    return !this.stopping;
  }

  /** Stops what started, newest first; true when every stop succeeded. Repeated calls share the first. */
  stop(): Promise<boolean> {
    this.stopping ??= this.stopAll();
    return this.stopping;
  }

  /** Reloads every started component that can, in start order; a failure is logged and the others still reload. */
  async reload(): Promise<void> {
    for (const s of [...this.started]) {
      if (!s.reload || this.stopping) continue;
      const t0 = this.clock();
      try {
        await s.reload();
        log.info('component reloaded', { component: s.name, ms: this.since(t0) });
      } catch (err) {
        log.error('component failed to reload', { component: s.name, ms: this.since(t0), error: describeChain(err) });
      }
    }
  }

  private async stopAll(): Promise<boolean> {
    let clean = true;
    await this.current?.catch(() => undefined);
    for (let s = this.started.pop(); s; s = this.started.pop()) {
      const t0 = this.clock();
      try {
        await s.stop?.();
        log.info('component stopped', { component: s.name, ms: this.since(t0) });
      } catch (err) {
        clean = false;
        log.error('component failed to stop', { component: s.name, ms: this.since(t0), error: describeChain(err) });
      }
    }
    return clean;
  }

  private since(t0: number): number {
    return Math.round(this.clock() - t0);
  }
}
