import { describeChain } from '../errors';
import type { Kernel } from '../kernel/contract';
import { log, since } from '../log';
import { del, put, type Store, type StoreOp } from '../store/contract';
import { emit } from '../telemetry/hook';
import { applyRemovals } from './teardown';

/** Links per `ip -batch`: big enough to amortise, small enough that stopping waits for at most ~1 s of deletions. */
const CHUNK = 32;

/**
 * Deletes links in the background. Callers commit a tombstone (see {@link tombstones}) together with the removal
 * of the record that owned the link, answer dockerd, and hand the names here; the reaper batches what is pending
 * into one `ip -batch`, then drops the tombstones. {@link flush} waits until nothing is pending: anything about to
 * create links whose names might collide, or to rebuild firewall state, calls it first.
 */
export class LinkReaper {
  private readonly pending = new Set<string>();
  /** The chunk being deleted now (out of `pending`, not yet gone). */
  private deleting = new Set<string>();
  /** After stop(): the time after which no new chunk starts. */
  private deadline = Infinity;
  private readonly jobs: Array<{ name: string; run: () => Promise<void> }> = [];
  private running: Promise<void> | undefined;

  constructor(
    private readonly kernel: Kernel,
    private readonly store: Store,
  ) {}

  /** Store ops recording that `links` must still be deleted. */
  static tombstones(links: string[]): StoreOp[] {
    const now = new Date().toISOString();
    return links.map((link) => put('tombstone', link, { link, createdAt: now }));
  }

  /** Starts deleting `links` (their tombstones must be committed already). */
  schedule(links: string[]): void {
    for (const l of links) this.pending.add(l);
    this.kick();
  }

  /**
   * Runs idempotent cleanup work after the pending deletions (reconcile redoes it if tsnet dies first). A job must
   * not wait for a driver lock: CreateNetwork flushes the reaper while holding them. It re-checks the state instead.
   */
  scheduleJob(name: string, run: () => Promise<void>): void {
    this.jobs.push({ name, run });
    this.kick();
  }

  private kick(): void {
    if (!this.stopped && !this.running && (this.pending.size > 0 || this.jobs.length > 0)) this.running = this.loop();
  }

  /** Resolves when none of `links` is queued or being deleted (others may still be). */
  async settle(links: readonly string[]): Promise<void> {
    while (this.running && links.some((l) => this.pending.has(l) || this.deleting.has(l))) await this.running;
  }

  /** Resolves when every scheduled deletion has been attempted. */
  async flush(): Promise<void> {
    while (this.running) await this.running;
  }

  /**
   * For shutdown: keeps deleting for up to `graceMs`, runs the pending jobs, and leaves what is left to the
   * tombstones (the next start deletes them): a stop after `docker network rm` leaves nothing behind, yet never waits
   * for thousands of netdev unregistrations.
   */
  async stop(graceMs = 5_000): Promise<void> {
    this.deadline = performance.now() + graceMs;
    await this.flush();
  }

  private get stopped(): boolean {
    return performance.now() > this.deadline;
  }

  private async loop(): Promise<void> {
    try {
      while ((!this.stopped && this.pending.size > 0) || this.jobs.length > 0) {
        // Jobs are short (restoring the ruleset) and have no tombstone: they run even when stopping.
        const job = this.stopped || this.pending.size === 0 ? this.jobs.shift() : undefined;
        if (job) {
          await job.run().catch((err: unknown) => log.error('background job failed', { job: job.name, error: describeChain(err) }));
          continue;
        }
        const batch = [...this.pending].slice(0, CHUNK);
        for (const l of batch) this.pending.delete(l);
        this.deleting = new Set(batch);
        const start = performance.now();
        try {
          await applyRemovals(this.kernel, batch.map((name) => ({ op: 'link.del', name })));
          await this.store.commit(batch.map((l) => del('tombstone', l)));
          emit({ kind: 'reap', links: batch.length, ok: true });
          log.debug('reaped links', { links: batch, ms: since(start) });
        } catch (err) {
          emit({ kind: 'reap', links: batch.length, ok: false });
          // Tombstones stay; the next start (reconcile) tries again.
          log.error('background link deletion failed', { links: batch, error: describeChain(err) });
        }
        this.deleting = new Set();
      }
    } finally {
      this.running = undefined;
    }
  }
}
