/**
 * The hook's events as Prometheus metrics, on a registry of tsnet's own (never prom-client's global one, which
 * whatever else loads prom-client in this process would share). Durations are in seconds, as Prometheus expects.
 * Every label value comes from a closed set or from tsnet's own ids (plugin methods it serves, error codes, pool
 * ids): nothing a caller sends becomes a label.
 */

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
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
  private readonly dnsQueries: Counter<'rcode' | 'forwarded'>;
  private readonly dnsSeconds: Histogram<'forwarded'>;
  /** The DNS path's label children, bound once per rcode and path: a query then skips prom-client's label hashing. */
  private readonly dnsChildren = new Map<string, { count: Counter.Internal; seconds: Histogram.Internal<'forwarded'> }>();

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
    this.dnsQueries = new Counter({ name: 'tsnet_dns_queries_total', help: 'DNS queries answered, by rcode (none: dropped) and whether forwarded upstream', labelNames: ['rcode', 'forwarded'], registers });
    this.dnsSeconds = new Histogram({ name: 'tsnet_dns_query_duration_seconds', help: 'Time to answer a DNS query, local or forwarded', labelNames: ['forwarded'], buckets: DNS_BUCKETS, registers });
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
      case 'dns': {
        const key = `${e.rcode}|${e.forwarded}`;
        let child = this.dnsChildren.get(key);
        if (!child) {
          const forwarded = String(e.forwarded);
          const rcode = e.rcode === 'none' ? 'none' : (RCODE_NAMES[e.rcode] ?? String(e.rcode));
          child = { count: this.dnsQueries.labels({ rcode, forwarded }), seconds: this.dnsSeconds.labels({ forwarded }) };
          this.dnsChildren.set(key, child);
        }
        child.count.inc();
        child.seconds.observe(e.ms / 1000);
        return;
      }
      default:
        assertNever(e, 'telemetry event');
    }
  };
}
