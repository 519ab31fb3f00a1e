/**
 * The {@link DockerFeed}: what tsnet knows of Docker's containers and networks, kept current from `/events`.
 *
 * It runs in the background only and is never on a plugin call's path: dockerd calls tsnet at its boot before its
 * own API answers, so a plugin call that waited on Docker would deadlock dockerd. tsnet works (plugin calls
 * answered, data plane intact) while Docker's API is down; the feed's failures are only logged (rate-limited) and
 * retried with backoff, and its listeners simply hear nothing new meanwhile.
 *
 * Each (re)connect: negotiate the API version, open the event stream FIRST (`since` = the last event time seen),
 * then a full resync (list + inspect each container, list networks) while events are buffered, then the buffered
 * events and all later ones. The daemon keeps only its last 1,000 events, so the resync, not the replay, is what
 * makes a long outage safe; opening the stream before listing is what makes the window between them safe.
 */
import { assertNever, describeBriefly } from '../errors';
import { log } from '../log';
import { DockerClient } from './client';
import type { ContainerInfo, DockerFeed, DockerStatus, NetworkInfo } from './contract';
import { Backoff, openEventStream, type DockerEvent } from './events';

/** The timer functions the feed uses (fake ones in tests). */
export interface Timers {
  setTimeout(fn: () => void, ms: number): NodeJS.Timeout;
  clearTimeout(handle: NodeJS.Timeout): void;
  setImmediate(fn: () => void): unknown;
}

const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => {
    clearTimeout(h);
  },
  setImmediate: (fn) => setImmediate(fn),
};

export interface FeedOptions {
  socketPath: string;
  /** Per request (see DockerClientOptions.timeoutMs). */
  timeoutMs?: number;
  backoffInitialMs?: number;
  backoffCapMs?: number;
  timers?: Timers;
  random?: () => number;
  now?: () => number;
  /** Failures are logged at warn at most this often (the first one always). */
  logEveryMs?: number;
}

/** Inspects at once during a resync (thousands of containers should not take thousands of round trips in a row). */
const RESYNC_CONCURRENCY = 8;
/**
 * Listeners wait for re-inspections in flight (a burst is one call) at most this long: under a burst of starts the
 * in-flight count hardly reaches zero, and a container that is ready must be served within a second of its event.
 */
const MAX_EMIT_WAIT_MS = 100;

const logger = log.child({ component: 'docker-feed' });

export class DockerEventFeed implements DockerFeed {
  private readonly client: DockerClient;
  private readonly timers: Timers;
  private readonly backoff: Backoff;
  private readonly now: () => number;
  private readonly logEveryMs: number;

  private readonly containerListeners: ((c: ReadonlyArray<ContainerInfo>) => void)[] = [];
  private readonly networkListeners: ((n: ReadonlyArray<NetworkInfo>) => void)[] = [];
  private readonly statusListeners: ((s: DockerStatus) => void)[] = [];

  private containers = new Map<string, ContainerInfo>();
  private networks: NetworkInfo[] = [];
  /** Per-container chain of re-inspections, so the last event's state wins. */
  private readonly chains = new Map<string, Promise<void>>();
  private networkChain: Promise<void> = Promise.resolve();

  private status: DockerStatus | undefined;
  private lastEventTime: number | undefined;
  /** Bumped per connection: answers from an older connection are dropped. */
  private generation = 0;
  private connection: AbortController | undefined;
  /** While a resync runs: containers events named, and whether networks changed. */
  private buffered: { ids: Set<string>; networks: boolean } | undefined;

  private started = false;
  private stopped = false;
  private loopDone: Promise<void> = Promise.resolve();
  private sleepTimer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;

  /** Re-inspections queued or running; listeners wait for them (a burst is one call), see {@link MAX_EMIT_WAIT_MS}. */
  private inFlight = 0;
  /** When the call that is being held back was first due. */
  private deferredSince: number | undefined;
  private containersDirty = false;
  private networksDirty = false;
  private emitScheduled = false;
  private emittedOnce = false;

  private lastWarnAt = -Infinity;
  private suppressed = 0;
  /** A failure was logged since the last connection: say when it is over (once, not per flap). */
  private warned = false;

  constructor(opts: FeedOptions) {
    this.client = new DockerClient({ socketPath: opts.socketPath, ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }) });
    this.timers = opts.timers ?? realTimers;
    this.backoff = new Backoff(opts.backoffInitialMs ?? 250, opts.backoffCapMs ?? 30_000, opts.random);
    this.now = opts.now ?? Date.now;
    this.logEveryMs = opts.logEveryMs ?? 60_000;
  }

  onContainers(listener: (containers: ReadonlyArray<ContainerInfo>) => void): void {
    this.containerListeners.push(listener);
  }

  onNetworks(listener: (networks: ReadonlyArray<NetworkInfo>) => void): void {
    this.networkListeners.push(listener);
  }

  /** A listener added after a status was reported hears the current one at once (components start in any order). */
  onStatus(listener: (status: DockerStatus) => void): void {
    this.statusListeners.push(listener);
    const now = this.status;
    if (now) callSafely(() => listener(now));
  }

  /** Starts following in the background; returns at once (see the module comment). */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.loopDone = this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.connection?.abort();
    if (this.sleepTimer !== undefined) this.timers.clearTimeout(this.sleepTimer);
    this.wake?.();
    await this.loopDone;
  }

  /** Methods, not fields, after an await: the compiler would narrow a field as if nothing ran meanwhile. */
  private isStopped(): boolean {
    return this.stopped;
  }

  private isCurrent(gen: number): boolean {
    return gen === this.generation;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      let reason: unknown;
      try {
        reason = await this.connectOnce();
      } catch (err) {
        reason = err;
      }
      this.connection?.abort();
      if (this.isStopped()) return;
      const error = describeBriefly(reason);
      this.setStatus({ up: false, error });
      this.warn(error);
      await this.sleep(this.backoff.next());
    }
  }

  /** One connection: resolves with why it ended. */
  private async connectOnce(): Promise<Error> {
    const conn = new AbortController();
    this.connection = conn;
    const gen = ++this.generation;
    const apiVersion = await this.client.negotiate(conn.signal);
    this.buffered = { ids: new Set(), networks: false };
    const stream = await openEventStream(this.client, this.lastEventTime, conn.signal, (e) => {
      this.onEvent(e, gen);
    });
    try {
      await this.resync(gen, conn.signal);
    } catch (err) {
      conn.abort();
      throw err;
    }
    const buffered = this.buffered;
    this.buffered = undefined;
    for (const id of buffered.ids) this.refreshContainer(id, gen, conn.signal);
    if (buffered.networks) this.refreshNetworks(gen, conn.signal);
    this.backoff.reset();
    this.setStatus({ up: true, apiVersion });
    if (this.warned) logger.info('following Docker again', { apiVersion });
    this.warned = false;
    const reason = await stream.ended;
    const bad = stream.badLines();
    if (bad > 0) logger.warn('Docker event stream had lines that are not events', { count: bad });
    return reason;
  }

  private async resync(gen: number, signal: AbortSignal): Promise<void> {
    const [ids, networks] = await Promise.all([this.client.listContainerIds(signal), this.client.listNetworks(signal)]);
    const found = new Map<string, ContainerInfo>();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < ids.length) {
        const id = ids[next++];
        const info = await this.client.inspectContainer(id, signal);
        if (info) found.set(info.id, info);
      }
    };
    await Promise.all(Array.from({ length: Math.min(RESYNC_CONCURRENCY, ids.length) }, worker));
    if (!this.isCurrent(gen)) return;
    if (!sameMap(this.containers, found) || !this.emittedOnce) this.markContainers();
    this.containers = found;
    this.setNetworks(networks, !this.emittedOnce);
  }

  private onEvent(e: DockerEvent, gen: number): void {
    if (gen !== this.generation) return;
    this.lastEventTime = Math.max(this.lastEventTime ?? 0, e.time);
    const signal = this.connection?.signal;
    if (!signal) return;
    const ids: string[] = [];
    let networks = false;
    switch (e.type) {
      case 'container':
        if (['start', 'die', 'destroy', 'rename'].includes(e.action)) ids.push(e.actorId);
        break;
      case 'network':
        if (['create', 'destroy', 'connect', 'disconnect'].includes(e.action)) networks = true;
        if (e.container !== undefined && (e.action === 'connect' || e.action === 'disconnect')) ids.push(e.container);
        break;
      default:
        assertNever(e.type, 'Docker event type');
    }
    if (this.buffered) {
      for (const id of ids) this.buffered.ids.add(id);
      this.buffered.networks ||= networks;
      return;
    }
    for (const id of ids) this.refreshContainer(id, gen, signal);
    if (networks) this.refreshNetworks(gen, signal);
  }

  /** Re-inspects one container after the inspections already queued for it (the last one started wins). */
  private refreshContainer(id: string, gen: number, signal: AbortSignal): void {
    const prev = this.chains.get(id) ?? Promise.resolve();
    this.inFlight++;
    const next: Promise<void> = prev.then(async () => {
      try {
        if (gen !== this.generation) return;
        const info = await this.client.inspectContainer(id, signal);
        if (gen === this.generation) this.applyContainer(id, info);
      } catch (err) {
        // The connection is probably gone; its end triggers a reconnect and a resync that repairs this entry.
        if (gen === this.generation) logger.debug('inspecting a container failed', { container: id.slice(0, 12), error: describeBriefly(err) });
      } finally {
        if (this.chains.get(id) === next) this.chains.delete(id);
        this.inFlight--;
        if (this.containersDirty) this.scheduleEmit();
      }
    });
    this.chains.set(id, next);
  }

  private applyContainer(id: string, info: ContainerInfo | undefined): void {
    const old = this.containers.get(id);
    if (info === undefined) {
      if (old) {
        this.containers.delete(old.id);
        this.markContainers();
      }
      return;
    }
    if (old && JSON.stringify(old) === JSON.stringify(info)) return;
    this.containers.set(info.id, info);
    this.markContainers();
  }

  private refreshNetworks(gen: number, signal: AbortSignal): void {
    this.networkChain = this.networkChain.then(async () => {
      if (gen !== this.generation) return;
      try {
        const networks = await this.client.listNetworks(signal);
        if (gen === this.generation) this.setNetworks(networks, false);
      } catch (err) {
        if (gen === this.generation) logger.debug('listing networks failed', { error: describeBriefly(err) });
      }
    });
  }

  private setNetworks(networks: NetworkInfo[], force: boolean): void {
    const sorted = [...networks].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    if (!force && JSON.stringify(sorted) === JSON.stringify(this.networks)) return;
    this.networks = sorted;
    this.networksDirty = true;
    this.scheduleEmit();
  }

  private markContainers(): void {
    this.containersDirty = true;
    this.scheduleEmit();
  }

  /** One listener call per burst: everything that changed in this turn of the event loop. */
  private scheduleEmit(): void {
    if (this.emitScheduled) return;
    this.emitScheduled = true;
    this.timers.setImmediate(() => {
      this.emitScheduled = false;
      if (this.containersDirty && this.inFlight > 0) {
        // The last re-inspection of the burst, or the next change after the bound, makes the call.
        const t = this.now();
        this.deferredSince ??= t;
        if (t - this.deferredSince < MAX_EMIT_WAIT_MS) return;
      }
      this.deferredSince = undefined;
      this.emittedOnce = true;
      if (this.containersDirty) {
        this.containersDirty = false;
        const list = [...this.containers.values()].filter((c) => c.networks.length > 0).sort((a, b) => (a.id < b.id ? -1 : 1));
        for (const l of this.containerListeners) callSafely(() => l(list));
      }
      if (this.networksDirty) {
        this.networksDirty = false;
        const list = this.networks;
        for (const l of this.networkListeners) callSafely(() => l(list));
      }
    });
  }

  private setStatus(s: DockerStatus): void {
    const old = this.status;
    if (old && old.up === s.up && (s.up ? old.up && old.apiVersion === s.apiVersion : !old.up && old.error === s.error)) return;
    this.status = s;
    for (const l of this.statusListeners) callSafely(() => l(s));
  }

  /** Warns about a failed connection at most once per {@link FeedOptions.logEveryMs}, counting the rest. */
  private warn(error: string): void {
    const t = this.now();
    if (t - this.lastWarnAt < this.logEveryMs) {
      this.suppressed++;
      return;
    }
    logger.warn('Docker API unavailable; retrying in the background', { error, suppressed: this.suppressed });
    this.warned = true;
    this.lastWarnAt = t;
    this.suppressed = 0;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = () => {
        this.wake = undefined;
        this.sleepTimer = undefined;
        resolve();
      };
      this.sleepTimer = this.timers.setTimeout(this.wake, ms);
    });
  }
}

function sameMap(a: Map<string, ContainerInfo>, b: Map<string, ContainerInfo>): boolean {
  if (a.size !== b.size) return false;
  for (const [id, c] of a) if (JSON.stringify(c) !== JSON.stringify(b.get(id))) return false;
  return true;
}

/** A listener that throws must not stop the feed or the other listeners. */
function callSafely(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    logger.error('a Docker feed listener failed', { error: describeBriefly(err) });
  }
}
