import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { PrometheusTelemetry } from '../../src/telemetry/prometheus';
import { metricNames } from './telemetry-fixtures';

/** The parts of a Grafana dashboard this test reads. */
const Dashboard = z.object({
  title: z.string(),
  panels: z.array(z.object({ title: z.string(), targets: z.array(z.object({ expr: z.string() })).min(1) })).min(1),
});

const file = path.join(__dirname, '../../grafana/tsnet-dashboard.json');

/** What tsnet serves after one event of every kind: the names a dashboard may use. */
async function served(): Promise<Set<string>> {
  const m = new PrometheusTelemetry({ pools: () => [{ poolId: 'tsnet-local/10.1.0.0/24', used: 3, size: 254 }] });
  m.sink({ kind: 'call', method: 'NetworkDriver.CreateNetwork', outcome: 'ok', ms: 3 });
  m.sink({ kind: 'kernel', step: 'ip.batch', ms: 0.4, ok: true });
  m.sink({ kind: 'store-commit', ms: 0.1, ok: true });
  m.sink({ kind: 'reap', links: 2, ok: true });
  m.sink({ kind: 'reclaim', what: 'network', outcome: 'removed' });
  m.sink({ kind: 'firewall', forced: false, repaired: true, ms: 4 });
  m.sink({ kind: 'reconcile', ms: 20, drift: { orphan: 1 } });
  m.sink({ kind: 'dns', rcode: 0, ms: 0.01, forwarded: false });
  return metricNames(await m.render());
}

describe('grafana/tsnet-dashboard.json', () => {
  test('every metric its PromQL names is one tsnet serves (renaming a metric without the dashboard fails here)', async () => {
    const dash = Dashboard.parse(JSON.parse(fs.readFileSync(file, 'utf8')));
    const names = await served();
    const used = new Set(dash.panels.flatMap((p) => p.targets.flatMap((t) => [...t.expr.matchAll(/\btsnet_[a-z0-9_]+/g)].map((m) => m[0]))));
    expect(used.size).toBeGreaterThan(10);
    expect([...used].filter((n) => !names.has(n))).toEqual([]);
  });

  test('it covers what the issue asks a dashboard to show', () => {
    const dash = Dashboard.parse(JSON.parse(fs.readFileSync(file, 'utf8')));
    const exprs = dash.panels.flatMap((p) => p.targets.map((t) => t.expr)).join('\n');
    for (const needed of [
      'rate(tsnet_plugin_calls_total',
      'outcome!="ok"',
      'histogram_quantile(0.5, sum by (le, method) (rate(tsnet_plugin_call_duration_seconds_bucket',
      'histogram_quantile(0.99, sum by (le, method) (rate(tsnet_plugin_call_duration_seconds_bucket',
      'tsnet_kernel_step_duration_seconds_bucket',
      'tsnet_ipam_pool_used_addresses / tsnet_ipam_pool_size_addresses',
      'rate(tsnet_dns_queries_total',
      'tsnet_dns_query_duration_seconds_bucket',
      'tsnet_reconcile_drift',
    ]) {
      expect(exprs).toContain(needed);
    }
  });

  test('the check itself fails for a name tsnet does not serve', async () => {
    const names = await served();
    expect(names.has('tsnet_plugin_calls_total')).toBe(true);
    expect(names.has('tsnet_plugin_call_duration_seconds_bucket')).toBe(true);
    expect(names.has('tsnet_plugin_call_total')).toBe(false);
  });
});
