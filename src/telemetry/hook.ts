/**
 * The one instrumentation hook: modules report what they did as typed events, and whoever attached a sink (the
 * daemon's Prometheus registry, a test, a bench) turns them into numbers. With no sink attached {@link emit} is one
 * comparison, and hot paths (the DNS server) ask {@link telemetryOn} before they even read the clock. This module
 * imports nothing, so every room may import it and none of them sees prom-client.
 */

/** Kernel steps timed: each is one process round trip (or sysctl write) whose cost the bench breaks calls into. */
export type KernelStep =
  /** One `ip -batch` of changes. */
  | 'ip.batch'
  /** `ip -json addr show` (all links or one). */
  | 'ip.links'
  /** `ip -json route show`. */
  | 'ip.routes'
  /** One /proc/sys write. */
  | 'sysctl'
  /** One `nft -f` transaction. */
  | 'nft'
  /** One iptables/ip6tables run (tsnet's DOCKER-USER/FORWARD rules). */
  | 'iptables';

export type ReclaimKind = 'endpoint' | 'network' | 'address' | 'pool';

export type TelemetryEvent =
  /** A plugin call answered: `outcome` is `ok` or the error code of the `{"Err"}` reply; `method` is `unknown` for calls tsnet does not serve (caller text never becomes a label). */
  | { kind: 'call'; method: string; outcome: string; ms: number }
  | { kind: 'kernel'; step: KernelStep; ms: number; ok: boolean }
  | { kind: 'store-commit'; ms: number; ok: boolean }
  /** One chunk of the background link reaper. */
  | { kind: 'reap'; links: number; ok: boolean }
  /** What reclaim did with a candidate dockerd no longer has: removed it, kept it (it changed meanwhile) or failed. */
  | { kind: 'reclaim'; what: ReclaimKind; outcome: 'removed' | 'kept' | 'failed' }
  /** A firewall check (the drift watcher's, or SIGHUP's forced one) and whether it had to sync the table. */
  | { kind: 'firewall'; forced: boolean; repaired: boolean; ms: number }
  /** A reconcile at start: how many repairs of each kind its plan held (the drift between store and kernel). */
  | { kind: 'reconcile'; ms: number; drift: Readonly<Record<string, number>> }
  /** A DNS query answered: its rcode (`none`: dropped unanswered), whether it went upstream. */
  | { kind: 'dns'; rcode: number | 'none'; ms: number; forwarded: boolean };

export type TelemetrySink = (event: TelemetryEvent) => void;

let sink: TelemetrySink | undefined;

/**
 * Events from before the first sink (the daemon attaches its registry after reconcile, so its start stays lean):
 * the newest {@link EARLY_MAX} are kept in a ring and handed to a sink attached with `replayEarly`. Once a sink was
 * attached nothing more is kept.
 */
const EARLY_MAX = 4096;
let early: TelemetryEvent[] | undefined = [];
let earlyNext = 0;

/** Whether a sink listens: lets a hot path skip timing a query nobody counts. */
export function telemetryOn(): boolean {
  return sink !== undefined;
}

/** Reports an event to the sink, if any. A sink that throws never breaks the reporting code path. */
export function emit(event: TelemetryEvent): void {
  if (sink === undefined) {
    if (early !== undefined) {
      if (early.length < EARLY_MAX) early.push(event);
      else early[earlyNext++ % EARLY_MAX] = event;
    }
    return;
  }
  try {
    sink(event);
  } catch {
    // Telemetry is never worth failing a plugin call or a DNS answer for.
  }
}

/**
 * Attaches the one sink (replacing any); with `replayEarly` it first gets the events kept from before any sink
 * (oldest first). The returned function detaches it again if it is still the one.
 */
export function attachSink(s: TelemetrySink, opts: { replayEarly?: boolean } = {}): () => void {
  const kept = early === undefined ? [] : [...early.slice(earlyNext % EARLY_MAX), ...early.slice(0, earlyNext % EARLY_MAX)];
  early = undefined;
  sink = s;
  if (opts.replayEarly) for (const e of kept) emit(e);
  return () => {
    if (sink === s) sink = undefined;
  };
}

/** Milliseconds since `start` (a `performance.now()` reading), unrounded: histograms bucket it. */
export function elapsed(start: number): number {
  return performance.now() - start;
}
