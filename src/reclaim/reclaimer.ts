/**
 * The scheduler of reclaiming: a pass looks (tsnet's holdings, then one complete read of Docker's API, then
 * {@link decide}); when there are candidates it waits the grace period and looks again, and removes what both looks
 * name identically. What is new in the second look starts the next round. Nothing is decided from a look that failed
 * or was in doubt, nor when Docker's API went down during the grace (missing all along is then not known).
 * It runs off the plugin path: triggered at start, whenever Docker's API becomes readable again and whenever Docker's
 * networks change.
 */
import type { Timers } from '../docker/feed';
import { assertNever, describeBriefly } from '../errors';
import { log } from '../log';
import { emit } from '../telemetry/hook';
import { type Candidate, candidateKey, type DockerView, decide, type Holdings, inRemovalOrder } from './decide';

export interface ReclaimerOptions {
  /** tsnet's driver and IPAM name. */
  driverName: string;
  /** How long a candidate must stay missing before it is removed. */
  graceMs: number;
  holdings: () => Holdings;
  /** One complete read of Docker's API (rejects on any failure). */
  read: (networkIds: string[]) => Promise<DockerView>;
  /**
   * Removes one confirmed candidate through the driver's or IPAM's normal paths; resolves false when it changed since
   * it was looked at (then it stays).
   */
  remove: (c: Candidate) => Promise<boolean>;
  /** The daemon trusted before this process (see {@link ReclaimerOptions.remember}). */
  trustedDaemonId?: string;
  /** First-use trust was promised at a start that held nothing (./trust.ts): the first daemon read is trusted. */
  firstUse?: boolean;
  /** Keeps a newly trusted daemon for later starts (a failure is logged; trust then lasts this process). */
  remember?: (daemonId: string, evidence: 'network' | 'first-use') => Promise<void>;
  timers?: Pick<Timers, 'setTimeout' | 'clearTimeout'>;
}

const logger = log.child({ component: 'reclaim' });
/** Candidates named in one log line; the count is always given. */
const LOGGED = 20;

const realTimers: Pick<Timers, 'setTimeout' | 'clearTimeout'> = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => {
    clearTimeout(h);
  },
};

function describe(c: Candidate): string {
  switch (c.kind) {
    case 'endpoint':
      return `endpoint ${c.endpointId.slice(0, 12)}`;
    case 'network':
      return `network ${c.networkId.slice(0, 12)}`;
    case 'address':
      return `address ${c.address} (${c.poolId})`;
    case 'pool':
      return `pool ${c.poolId}`;
    default:
      return assertNever(c, 'reclaim candidate');
  }
}

export class Reclaimer {
  private readonly timers: Pick<Timers, 'setTimeout' | 'clearTimeout'>;
  private running: Promise<void> | undefined;
  private again = false;
  /** Bumped when Docker's API goes down: a grace period spanning it proves nothing. */
  private epoch = 0;
  private stopped = false;
  private sleeping: { timer: NodeJS.Timeout; wake: () => void } | undefined;
  /** A daemon a read showed knowing tsnet's networks (see decide's evidence). */
  private trustedDaemonId: string | undefined;

  constructor(private readonly opts: ReclaimerOptions) {
    this.timers = opts.timers ?? realTimers;
    this.trustedDaemonId = opts.trustedDaemonId;
  }

  /** Runs a pass, or another one after the pass in progress. */
  trigger(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.loop().finally(() => (this.running = undefined));
  }

  /** Docker's API went down: a pass waiting out its grace decides nothing. */
  apiDown(): void {
    this.epoch++;
  }

  /** Resolves when no pass runs (tests). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const s = this.sleeping;
    if (s) {
      this.timers.clearTimeout(s.timer);
      s.wake();
    }
    await this.idle();
  }

  private isStopped(): boolean {
    return this.stopped;
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      try {
        await this.pass();
      } catch (err) {
        logger.error('reclaim pass failed', { error: describeBriefly(err) });
      }
    } while (this.runAgain());
  }

  /** A method, not the field: the compiler would narrow `again` as if no trigger came during the pass. */
  private runAgain(): boolean {
    return this.again && !this.stopped;
  }

  private async pass(): Promise<void> {
    let first = await this.look();
    while (first !== undefined && first.length > 0 && !this.isStopped()) {
      const epoch = this.epoch;
      logger.info('reclaim: tsnet holds what Docker does not; looking again after the grace period', {
        count: first.length,
        graceMs: this.opts.graceMs,
        candidates: first.slice(0, LOGGED).map(describe),
      });
      await this.sleep(this.opts.graceMs);
      if (this.isStopped()) return;
      if (epoch !== this.epoch) {
        logger.info('reclaim: Docker API went down during the grace period; nothing decided', { count: first.length });
        return;
      }
      const second = await this.look();
      if (second === undefined) return;
      const seen = new Set(first.map(candidateKey));
      let removed = 0;
      for (const c of inRemovalOrder(second.filter((c) => seen.has(candidateKey(c))))) {
        if (this.isStopped()) return;
        if (await this.removeOne(c)) removed++;
      }
      // A removal can make more candidates (a network's pool goes after the network): look afresh then.
      first = removed > 0 ? await this.look() : second.filter((c) => !seen.has(candidateKey(c)));
    }
  }

  /** The candidates now, or undefined when nothing may be decided (logged). */
  private async look(): Promise<Candidate[] | undefined> {
    const holdings = this.opts.holdings();
    let view: DockerView;
    try {
      view = await this.opts.read(holdings.networks.map((n) => n.id));
    } catch (err) {
      logger.warn('reclaim: Docker API not read completely; nothing decided', { error: describeBriefly(err) });
      return undefined;
    }
    const decision = decide(holdings, view, {
      driverName: this.opts.driverName,
      ...(this.trustedDaemonId === undefined ? {} : { trustedDaemonId: this.trustedDaemonId }),
      firstUse: this.opts.firstUse === true,
    });
    if (decision.kind === 'in-doubt') {
      logger.error('reclaim: not removing anything', { reason: decision.reason, candidates: decision.candidates });
      return undefined;
    }
    const evidence = decision.evidence;
    if ((evidence === 'network' || evidence === 'first-use') && this.trustedDaemonId !== view.daemon.id) {
      this.trustedDaemonId = view.daemon.id;
      logger.info('reclaim: trusting this Docker daemon to speak for the dockerd using tsnet', { daemonId: view.daemon.id.slice(0, 40), evidence });
      await this.opts.remember?.(view.daemon.id, evidence).catch((err: unknown) => logger.error('reclaim: trusted daemon not stored', { error: describeBriefly(err) }));
    }
    return decision.candidates;
  }

  /** Resolves whether `c` was removed. */
  private async removeOne(c: Candidate): Promise<boolean> {
    try {
      if (await this.opts.remove(c)) {
        emit({ kind: 'reclaim', what: c.kind, outcome: 'removed' });
        logger.info(`reclaim: removed ${c.kind} dockerd no longer has`, { ...c, graceMs: this.opts.graceMs });
        return true;
      }
      emit({ kind: 'reclaim', what: c.kind, outcome: 'kept' });
      logger.info(`reclaim: kept ${c.kind}: it changed since it was looked at`, { ...c });
    } catch (err) {
      emit({ kind: 'reclaim', what: c.kind, outcome: 'failed' });
      logger.error(`reclaim: removing ${c.kind} failed`, { ...c, error: describeBriefly(err) });
    }
    return false;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        this.sleeping = undefined;
        resolve();
      };
      this.sleeping = { timer: this.timers.setTimeout(wake, ms), wake };
    });
  }
}
