/**
 * The hook's events as Prometheus metrics, on a registry of tsnet's own (never prom-client's global one, which
 * whatever else loads prom-client in this process would share). Durations are in seconds, as Prometheus expects.
 * Every label value comes from a closed set or from tsnet's own ids (plugin methods it serves, error codes, pool
 * ids): nothing a caller sends becomes a label.
 */

import { collectDefaultMetrics, Counter, Gauge, Histogram, type Metric, Registry } from 'prom-client';
import { assertNever } from '../errors';
import type { PoolUsage } from '../ipam/driver';
import type { TelemetryEvent, TelemetrySink } from './hook';

export interface PrometheusOptions {
  /** The IPAM's pools as they are at scrape time. */
  pools?: () => PoolUsage[];
  /** Node's process metrics (CPU, memory, event loop lag, handles) under `tsnet_` too; default on. */
  processMetrics?: boolean;
}

/** Plugin calls: from tens of µs (capabilities) to seconds (a reconcile a call waits for). */
const CALL_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** One kernel round trip: ~0.1 ms (a batch to a running ip) to tens of ms (nft rebuilding a table). */
const KERNEL_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5];
/** A synchronous SQLite commit: fsync-bound, ~50 µs on tmpfs to ms on disks. */
const STORE_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2];
/** Local answers take µs; forwarded ones the upstream's round trip, up to the forwarder's timeouts. */
const DNS_BUCKETS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.025, 0.1, 0.5, 2, 5];

const RCODE_NAMES: Readonly<Record<number, string>> = { 0: 'NOERROR', 1: 'FORMERR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 4: 'NOTIMP', 5: 'REFUSED' };

const outcome = (ok: boolean) => (ok ? 'ok' : 'error');

/** Rcodes 0-15 as the header carries them, and one more for a query dropped unanswered. */
const RCODE_SLOTS = 17;
const DROPPED = 16;
const rcodeLabel = (slot: number) => (slot === DROPPED ? 'none' : (RCODE_NAMES[slot] ?? String(slot)));

/**
 * DNS queries tallied in plain arrays: the server answers ~100k queries a second, and prom-client hashes and
 * validates labels on every observation (~1.5 µs a query measured, more than the answer itself). The tallies become
 * samples only at scrape time ({@link dnsHistogram}, and the counter's collect).
 */
class DnsTally {
  /** Queries by rcode slot × forwarded (index slot * 2 + 1 when forwarded). */
  readonly queries = new Float64Array(RCODE_SLOTS * 2);
  /** Per path (0 local, 1 forwarded): non-cumulative counts per bucket, the last one past the largest bound. */
  readonly buckets = [new Float64Array(DNS_BUCKETS.length + 1), new Float64Array(DNS_BUCKETS.length + 1)];
  readonly sums = [0, 0];

  add(rcode: number | 'none', forwarded: boolean, seconds: number): void {
    const path = forwarded ? 1 : 0;
    this.queries[(rcode === 'none' ? DROPPED : rcode & 0x0f) * 2 + path]++;
    let i = 0;
    while (i < DNS_BUCKETS.length && seconds > DNS_BUCKETS[i]) i++;
    this.buckets[path][i]++;
    this.sums[path] += seconds;
  }
}

/** A sample as prom-client's registry prints it: `metricName{labels} value`. */
interface Sample {
  metricName: string;
  labels: Record<string, string | number>;
  value: number;
}

/**
 * The DNS latency histogram read from a {@link DnsTally} at scrape time. prom-client has no histogram fed from
 * counts, so this is a metric of the shape its registry reads (name, help, type, `get()`), as its own are.
 */
function dnsHistogram(tally: DnsTally): { name: string; help: string; type: 'histogram'; aggregator: 'sum'; get(): Promise<{ name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: Sample[] }> } {
  const name = 'tsnet_dns_query_duration_seconds';
  const head = { name, help: 'Time to answer a DNS query, local or forwarded', type: 'histogram' as const, aggregator: 'sum' as const };
  const samples = (path: number): Sample[] => {
    const forwarded = String(path === 1);
    let running = 0;
    const buckets = DNS_BUCKETS.map((le, i) => {
      running += tally.buckets[path][i];
      return { metricName: `${name}_bucket`, labels: { le, forwarded }, value: running };
    });
    const count = running + tally.buckets[path][DNS_BUCKETS.length];
    return [
      ...buckets,
      { metricName: `${name}_bucket`, labels: { le: '+Inf', forwarded }, value: count },
      { metricName: `${name}_sum`, labels: { forwarded }, value: tally.sums[path] },
      { metricName: `${name}_count`, labels: { forwarded }, value: count },
    ];
  };
  return { ...head, get: () => Promise.resolve({ ...head, values: [...samples(0), ...samples(1)] }) };
}

/** tsnet's metrics: {@link sink} feeds them from the hook, {@link render} is what `/metrics` serves. */
export class PrometheusTelemetry {
  readonly registry = new Registry();
  private readonly calls: Counter<'method' | 'outcome'>;
  private readonly callSeconds: Histogram<'method'>;
  private readonly kernelSeconds: Histogram<'step' | 'outcome'>;
  private readonly commitSeconds: Histogram<'outcome'>;
  private readonly reaped: Counter<'outcome'>;
  private readonly reclaim: Counter<'kind' | 'outcome'>;
  private readonly firewallChecks: Counter<'trigger' | 'result'>;
  private readonly drift: Gauge<'kind'>;
  private readonly repairs: Counter<'kind'>;
  private readonly reconcileSeconds: Gauge;
  private readonly dns = new DnsTally();

  constructor(opts: PrometheusOptions = {}) {
    const registers = [this.registry];
    this.calls = new Counter({ name: 'tsnet_plugin_calls_total', help: 'Plugin calls answered, by method and outcome (ok or the error code)', labelNames: ['method', 'outcome'], registers });
    this.callSeconds = new Histogram({ name: 'tsnet_plugin_call_duration_seconds', help: 'Time from request to reply of plugin calls', labelNames: ['method'], buckets: CALL_BUCKETS, registers });
    this.kernelSeconds = new Histogram({ name: 'tsnet_kernel_step_duration_seconds', help: 'Kernel steps (ip batch, ip reads, sysctl write, nft, iptables) by step and outcome', labelNames: ['step', 'outcome'], buckets: KERNEL_BUCKETS, registers });
    this.commitSeconds = new Histogram({ name: 'tsnet_store_commit_duration_seconds', help: 'State store commits', labelNames: ['outcome'], buckets: STORE_BUCKETS, registers });
    this.reaped = new Counter({ name: 'tsnet_reaper_links_total', help: 'Links the background reaper deleted (ok) or left to the next start (error)', labelNames: ['outcome'], registers });
    this.reclaim = new Counter({ name: 'tsnet_reclaim_actions_total', help: 'What reclaim did with what dockerd no longer has: removed, kept (changed meanwhile), failed', labelNames: ['kind', 'outcome'], registers });
    this.firewallChecks = new Counter({ name: 'tsnet_firewall_checks_total', help: "Firewall checks (drift watcher: watch, SIGHUP: reload) and whether tsnet's table had to be restored", labelNames: ['trigger', 'result'], registers });
    this.drift = new Gauge({ name: 'tsnet_reconcile_drift', help: 'Repairs the last reconcile found needed, by kind (0: store and kernel agreed)', labelNames: ['kind'], registers });
    this.repairs = new Counter({ name: 'tsnet_reconcile_repairs_total', help: 'Repairs reconciles planned, by kind', labelNames: ['kind'], registers });
    this.reconcileSeconds = new Gauge({ name: 'tsnet_reconcile_duration_seconds', help: 'How long the last reconcile took', registers });
    const dns = this.dns;
    new Counter({
      name: 'tsnet_dns_queries_total',
      help: 'DNS queries answered, by rcode (none: dropped) and whether forwarded upstream',
      labelNames: ['rcode', 'forwarded'],
      registers,
      collect() {
        this.reset();
        dns.queries.forEach((n, i) => {
          if (n > 0) this.inc({ rcode: rcodeLabel(i >> 1), forwarded: String((i & 1) === 1) }, n);
        });
      },
    });
    // The registry reads only name, help, type and get() of a metric; prom-client's Metric type names its own classes.
    // eslint-disable-next-line @typescript-eslint/no-unsafe-type-assertion
    this.registry.registerMetric(dnsHistogram(dns) as unknown as Metric);
    const pools = opts.pools;
    if (pools) {
      // Computed at scrape from the IPAM's state (each gauge reads it as it is serialised): no plugin call pays.
      const poolGauge = (name: string, help: string, of: (p: PoolUsage) => number) =>
        new Gauge({
          name,
          help,
          labelNames: ['pool'],
          registers,
          collect() {
            this.reset();
            for (const p of pools()) this.set({ pool: p.poolId }, of(p));
          },
        });
      poolGauge('tsnet_ipam_pool_used_addresses', 'Addresses held in the pool (containers, gateways, aux and host addresses)', (p) => p.used);
      poolGauge('tsnet_ipam_pool_size_addresses', 'Addresses a host may have in the pool', (p) => p.size);
    }
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'tsnet_' });
  }

  /** The text exposition format (version 0.0.4). */
  readonly render = (): Promise<string> => this.registry.metrics();

  get contentType(): string {
    return this.registry.contentType;
  }

  readonly sink: TelemetrySink = (e: TelemetryEvent) => {
    switch (e.kind) {
      case 'call':
        this.calls.inc({ method: e.method, outcome: e.outcome });
        this.callSeconds.observe({ method: e.method }, e.ms / 1000);
        return;
      case 'kernel':
        this.kernelSeconds.observe({ step: e.step, outcome: outcome(e.ok) }, e.ms / 1000);
        return;
      case 'store-commit':
        this.commitSeconds.observe({ outcome: outcome(e.ok) }, e.ms / 1000);
        return;
      case 'reap':
        this.reaped.inc({ outcome: outcome(e.ok) }, e.links);
        return;
      case 'reclaim':
        this.reclaim.inc({ kind: e.what, outcome: e.outcome });
        return;
      case 'firewall':
        this.firewallChecks.inc({ trigger: e.forced ? 'reload' : 'watch', result: e.repaired ? 'repaired' : 'intact' });
        return;
      case 'reconcile':
        this.drift.reset();
        for (const [kind, n] of Object.entries(e.drift)) {
          this.drift.set({ kind }, n);
          this.repairs.inc({ kind }, n);
        }
        this.reconcileSeconds.set(e.ms / 1000);
        return;
      case 'dns':
        this.dns.add(e.rcode, e.forwarded, e.ms / 1000);
        return;
      default:
        assertNever(e, 'telemetry event');
    }
  };
}
