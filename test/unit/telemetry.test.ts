import * as dnsPacket from 'dns-packet';
import { createResolver } from '../../src/dns/resolver';
import type { BatchFailure } from '../../src/kernel/ip-session';
import { FakeFirewall } from '../../src/kernel/fake';
import { Iproute2Kernel } from '../../src/kernel/iproute2';
import { NftFirewall } from '../../src/kernel/nftables';
import { attachSink, emit, type TelemetryEvent, telemetryOn } from '../../src/telemetry/hook';
import { PrometheusTelemetry } from '../../src/telemetry/prometheus';
import { query } from './dns-fixtures';
import { type PluginFixture, startPlugin } from './plugin-fixture';
import { value } from './telemetry-fixtures';

const NID = '1'.repeat(64);
const EID = '2'.repeat(64);

describe('the hook', () => {
  // First in this file (each jest file has its own module state): nothing has attached a sink yet.
  test('events from before the first sink are replayed to a sink that asks, oldest first; later sinks get none', () => {
    expect(telemetryOn()).toBe(false);
    emit({ kind: 'store-commit', ms: 1, ok: true });
    emit({ kind: 'reap', links: 3, ok: false });
    const got: TelemetryEvent[] = [];
    const detach = attachSink((e) => got.push(e), { replayEarly: true });
    expect(telemetryOn()).toBe(true);
    expect(got).toEqual([
      { kind: 'store-commit', ms: 1, ok: true },
      { kind: 'reap', links: 3, ok: false },
    ]);
    emit({ kind: 'firewall', forced: false, repaired: true, ms: 2 });
    expect(got).toHaveLength(3);
    detach();
    expect(telemetryOn()).toBe(false);
    emit({ kind: 'store-commit', ms: 1, ok: true });
    const later: TelemetryEvent[] = [];
    const detach2 = attachSink((e) => later.push(e), { replayEarly: true });
    expect(later).toEqual([]);
    detach2();
  });

  test('a sink that throws never breaks the code that emits', () => {
    const detach = attachSink(() => {
      throw new Error('broken sink');
    });
    expect(() => emit({ kind: 'store-commit', ms: 1, ok: true })).not.toThrow();
    detach();
  });

  test('detaching a sink that was replaced leaves the new one attached', () => {
    const first: TelemetryEvent[] = [];
    const second: TelemetryEvent[] = [];
    const detachFirst = attachSink((e) => first.push(e));
    const detachSecond = attachSink((e) => second.push(e));
    detachFirst();
    emit({ kind: 'reap', links: 1, ok: true });
    expect([first.length, second.length]).toEqual([0, 1]);
    detachSecond();
  });
});

describe('hook → registry: plugin calls through the real server (kernel faked)', () => {
  let fx: PluginFixture;
  let metrics: PrometheusTelemetry;
  let detach: () => void;

  beforeEach(async () => {
    fx = await startPlugin();
    metrics = new PrometheusTelemetry({ pools: () => fx.ipam.poolUsage(), processMetrics: false });
    detach = attachSink(metrics.sink);
  });
  afterEach(async () => {
    detach();
    await fx.close();
  });

  async function createNetwork(): Promise<string> {
    const pool = await fx.call('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: '172.28.0.0/24', Options: {}, V6: false });
    const poolId = (pool.body as { PoolID: string }).PoolID;
    await fx.call('IpamDriver.RequestAddress', { PoolID: poolId, Address: '172.28.0.254', Options: { RequestAddressType: 'com.docker.network.gateway' } });
    const res = await fx.call('NetworkDriver.CreateNetwork', {
      NetworkID: NID,
      Options: { 'com.docker.network.generic': {}, 'com.docker.network.enable_ipv6': false },
      IPv4Data: [{ AddressSpace: 'tsnet-local', Pool: '172.28.0.0/24', Gateway: '172.28.0.254/24', AuxAddresses: null }],
      IPv6Data: null,
    });
    expect(res.status).toBe(200);
    return poolId;
  }

  test('calls are counted by method and outcome (the error code), with their latency in the histogram', async () => {
    await fx.call('Plugin.Activate');
    await fx.call('Plugin.Activate');
    await createNetwork();
    // An unknown network: the catalogue's code is the outcome.
    const bad = await fx.call('NetworkDriver.CreateEndpoint', { NetworkID: '9'.repeat(64), EndpointID: EID, Interface: { Address: '172.28.0.2/24' } });
    expect(bad.status).toBe(400);
    // A schema failure and a method tsnet does not serve (its name never becomes a label).
    await fx.call('NetworkDriver.CreateEndpoint', { NetworkID: 7 });
    await fx.call('NetworkDriver.SomethingNew-abc');
    const text = await metrics.render();
    const calls = (method: string, outcome: string) => value(text, 'tsnet_plugin_calls_total', { method, outcome });
    expect(calls('Plugin.Activate', 'ok')).toBe(2);
    expect(calls('NetworkDriver.CreateNetwork', 'ok')).toBe(1);
    expect(calls('NetworkDriver.CreateEndpoint', 'TSN_UNKNOWN_NETWORK')).toBe(1);
    expect(calls('NetworkDriver.CreateEndpoint', 'TSN_INVALID_REQUEST')).toBe(1);
    expect(calls('unknown', 'not-implemented')).toBe(1);
    expect(text).not.toContain('SomethingNew');
    const hist = (suffix: string, labels: Record<string, string>) => value(text, `tsnet_plugin_call_duration_seconds_${suffix}`, labels);
    expect(hist('count', { method: 'Plugin.Activate' })).toBe(2);
    expect(hist('bucket', { method: 'Plugin.Activate', le: '+Inf' })).toBe(2);
    // Every call lands in the 30 s bucket (no call of a faked kernel takes that long) and the sum is positive.
    expect(hist('bucket', { method: 'NetworkDriver.CreateEndpoint', le: '30' })).toBe(2);
    expect(hist('sum', { method: 'NetworkDriver.CreateNetwork' })).toBeGreaterThan(0);
  });

  test('store commits are timed, and pool usage is read from the IPAM at scrape time', async () => {
    const before = value(await metrics.render(), 'tsnet_store_commit_duration_seconds_count', { outcome: 'ok' });
    const poolId = await createNetwork();
    const text = await metrics.render();
    // RequestPool, RequestAddress and CreateNetwork's pending and done commits at least.
    expect(value(text, 'tsnet_store_commit_duration_seconds_count', { outcome: 'ok' }) - before).toBeGreaterThanOrEqual(3);
    expect(value(text, 'tsnet_ipam_pool_used_addresses', { pool: poolId })).toBe(1);
    expect(value(text, 'tsnet_ipam_pool_size_addresses', { pool: poolId })).toBe(254);
    await fx.call('IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: {} });
    expect(value(await metrics.render(), 'tsnet_ipam_pool_used_addresses', { pool: poolId })).toBe(2);
    await fx.call('NetworkDriver.DeleteNetwork', { NetworkID: NID });
    await fx.call('IpamDriver.ReleasePool', { PoolID: poolId });
    expect(await metrics.render()).not.toContain(`pool="${poolId}"`);
  });
});

/** An `ip -batch` stand-in: each batch reports the next failure queued, if any. */
class StubSession {
  readonly failures: Array<BatchFailure | undefined> = [];
  run(): Promise<BatchFailure | undefined> {
    return Promise.resolve(this.failures.shift());
  }
  renew(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {}
}

describe('hook → registry: kernel steps, DNS, reconcile', () => {
  let metrics: PrometheusTelemetry;
  let detach: () => void;
  beforeEach(() => {
    metrics = new PrometheusTelemetry({ processMetrics: false });
    detach = attachSink(metrics.sink);
  });
  afterEach(() => detach());

  test('each ip batch is a step, its outcome whether ip applied every line', async () => {
    const session = new StubSession();
    const kernel = new Iproute2Kernel(new FakeFirewall(), 'tsnet:test', { newSession: () => session });
    await kernel.apply([{ op: 'link.up', name: 'tsbr-x' }]);
    session.failures.push({ index: 0, reason: 'Cannot find device "tsbr-y"' });
    await expect(kernel.apply([{ op: 'link.up', name: 'tsbr-y' }])).rejects.toThrow(/tsbr-y/);
    const text = await metrics.render();
    expect(value(text, 'tsnet_kernel_step_duration_seconds_count', { step: 'ip.batch', outcome: 'ok' })).toBe(1);
    expect(value(text, 'tsnet_kernel_step_duration_seconds_count', { step: 'ip.batch', outcome: 'error' })).toBe(1);
  });

  test('every nft and iptables run is a step', async () => {
    const exec = (file: string) =>
      Promise.resolve(file === 'nft' ? { code: 0, stdout: '', stderr: '' } : { code: 1, stdout: '', stderr: 'iptables: No chain/target/match by that name.\n' });
    const fw = new NftFirewall(0x2000000, 'tsnetunit', { exec });
    await fw.addNetwork({ bridge: 'tsbr-unit000001', internal: false, icc: true, masquerade: true });
    const text = await metrics.render();
    expect(value(text, 'tsnet_kernel_step_duration_seconds_count', { step: 'nft', outcome: 'ok' })).toBeGreaterThanOrEqual(1);
    // No DOCKER-USER chain (the stub's iptables): the hook check's listing fails, as a step.
    expect(value(text, 'tsnet_kernel_step_duration_seconds_count', { step: 'iptables', outcome: 'error' })).toBeGreaterThanOrEqual(1);
  });

  test('DNS queries by rcode and path: refused locally, forwarded upstream', async () => {
    const upstreamReply = (msg: Buffer) => {
      const q = dnsPacket.decode(msg);
      return Buffer.from(dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions: q.questions, answers: [] }));
    };
    const resolver = createResolver({ forwarder: { forward: (msg) => Promise.resolve(upstreamReply(msg)), close: () => Promise.resolve() } });
    const ctx = { transport: 'udp' as const, source: '10.9.0.2', localAddress: '10.9.0.1' };
    await resolver.handle(query('example.org', 'A'), { ...ctx, mayForward: false });
    await resolver.handle(query('example.org', 'A'), { ...ctx, mayForward: true });
    await resolver.handle(query('example.net', 'A'), { ...ctx, mayForward: true });
    const text = await metrics.render();
    expect(value(text, 'tsnet_dns_queries_total', { rcode: 'REFUSED', forwarded: 'false' })).toBe(1);
    expect(value(text, 'tsnet_dns_queries_total', { rcode: 'NOERROR', forwarded: 'true' })).toBe(2);
    expect(value(text, 'tsnet_dns_query_duration_seconds_count', { forwarded: 'true' })).toBe(2);
    expect(value(text, 'tsnet_dns_query_duration_seconds_bucket', { forwarded: 'false', le: '+Inf' })).toBe(1);
  });

  test('DNS latency buckets are cumulative, as Prometheus reads them (the tallies are prom-client-free)', async () => {
    emit({ kind: 'dns', rcode: 0, ms: 0.005, forwarded: false });
    emit({ kind: 'dns', rcode: 0, ms: 0.01, forwarded: false });
    emit({ kind: 'dns', rcode: 3, ms: 3, forwarded: true });
    emit({ kind: 'dns', rcode: 'none', ms: 10_000, forwarded: false });
    const text = await metrics.render();
    const bucket = (forwarded: string, le: string) => value(text, 'tsnet_dns_query_duration_seconds_bucket', { forwarded, le });
    expect([bucket('false', '0.00001'), bucket('false', '0.005'), bucket('false', '5'), bucket('false', '+Inf')]).toEqual([2, 2, 2, 3]);
    expect([bucket('true', '0.001'), bucket('true', '0.005'), bucket('true', '+Inf')]).toEqual([0, 1, 1]);
    expect(value(text, 'tsnet_dns_query_duration_seconds_count', { forwarded: 'false' })).toBe(3);
    expect(value(text, 'tsnet_dns_query_duration_seconds_sum', { forwarded: 'true' })).toBeCloseTo(0.003);
    expect(value(text, 'tsnet_dns_queries_total', { rcode: 'NXDOMAIN', forwarded: 'true' })).toBe(1);
    expect(value(text, 'tsnet_dns_queries_total', { rcode: 'none', forwarded: 'false' })).toBe(1);
    // The exposition parses as one histogram family with its TYPE line.
    expect(text).toContain('# TYPE tsnet_dns_query_duration_seconds histogram');
  });

  test('reconcile drift: the last reconcile as a gauge by kind, every reconcile in the counter', async () => {
    emit({ kind: 'reconcile', ms: 12, drift: { orphan: 2, network: 1 } });
    emit({ kind: 'reconcile', ms: 3, drift: { orphan: 1 } });
    const text = await metrics.render();
    expect(value(text, 'tsnet_reconcile_drift', { kind: 'orphan' })).toBe(1);
    expect(value(text, 'tsnet_reconcile_drift', { kind: 'network' })).toBe(0);
    expect(value(text, 'tsnet_reconcile_repairs_total', { kind: 'orphan' })).toBe(3);
    expect(value(text, 'tsnet_reconcile_duration_seconds')).toBeCloseTo(0.003);
  });

  test('reaper, reclaim and firewall checks are counted', async () => {
    emit({ kind: 'reap', links: 32, ok: true });
    emit({ kind: 'reap', links: 4, ok: false });
    emit({ kind: 'reclaim', what: 'endpoint', outcome: 'removed' });
    emit({ kind: 'firewall', forced: false, repaired: true, ms: 5 });
    emit({ kind: 'firewall', forced: true, repaired: true, ms: 5 });
    const text = await metrics.render();
    expect(value(text, 'tsnet_reaper_links_total', { outcome: 'ok' })).toBe(32);
    expect(value(text, 'tsnet_reaper_links_total', { outcome: 'error' })).toBe(4);
    expect(value(text, 'tsnet_reclaim_actions_total', { kind: 'endpoint', outcome: 'removed' })).toBe(1);
    expect(value(text, 'tsnet_firewall_checks_total', { trigger: 'watch', result: 'repaired' })).toBe(1);
    expect(value(text, 'tsnet_firewall_checks_total', { trigger: 'reload', result: 'repaired' })).toBe(1);
  });

  test('its own registry: nothing lands in prom-client\'s global one', async () => {
    const { register } = await import('prom-client');
    emit({ kind: 'reap', links: 1, ok: true });
    expect(await register.metrics()).not.toContain('tsnet_');
  });
});
