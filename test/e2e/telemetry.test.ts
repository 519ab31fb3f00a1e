import { randomBytes, randomInt } from 'node:crypto';
import { runOk } from '../harness/exec';
import { describeE2E } from '../harness/host';
import { HostNs } from '../harness/hostns';
import { value } from '../unit/telemetry-fixtures';

/**
 * Metrics from the real process: tsnet in a host namespace of its own with --metrics-listen on that namespace's
 * loopback (any port is free there), the test playing dockerd on the plugin socket and scraping /metrics as
 * Prometheus would: calls counted by method and outcome, kernel steps timed by the real ip and nft.
 */
jest.setTimeout(90_000);

let h: HostNs | undefined;
afterEach(async () => {
  await h?.destroy();
  h = undefined;
});

/** One HTTP request from inside the namespace (node's http: the host may have no curl); status and body. */
async function scrape(ns: string, port: number, method = 'GET'): Promise<{ status: number; body: string }> {
  const script = `const r = require('http').request({ host: '127.0.0.1', port: ${port}, path: '/metrics', method: '${method}' }, (res) => {
    let b = ''; res.setEncoding('utf8'); res.on('data', (d) => (b += d));
    res.on('end', () => process.stdout.write(JSON.stringify({ status: res.statusCode, body: b })));
  }); r.on('error', (e) => { process.stderr.write(String(e)); process.exit(1); }); r.end();`;
  const { stdout } = await runOk('ip', ['netns', 'exec', ns, process.execPath, '-e', script], { timeoutMs: 15_000 });
  return JSON.parse(stdout) as { status: number; body: string };
}

describeE2E('telemetry: --metrics-listen on the real tsnet', () => {
  test('plugin calls and kernel steps show in /metrics; only GET /metrics is served', async () => {
    const port = randomInt(20_000, 60_000);
    h = await HostNs.create({}, ['--metrics-listen', `127.0.0.1:${port}`]);
    const first = await scrape(h.ns, port);
    expect(first.status).toBe(200);
    // The start: the harness's Plugin.Activate, and reconcile's run (replayed from before the registry existed).
    expect(value(first.body, 'tsnet_plugin_calls_total', { method: 'Plugin.Activate', outcome: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(first.body).toContain('tsnet_reconcile_duration_seconds ');
    expect(value(first.body, 'tsnet_kernel_step_duration_seconds_count', { step: 'ip.links', outcome: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(first.body).toContain('tsnet_process_resident_memory_bytes');

    const net = await h.network(`10.${randomInt(100, 200)}.${randomInt(0, 250)}`);
    await h.container(net, 2);
    const unknown = await h.tsnet.call('NetworkDriver.CreateEndpoint', {
      NetworkID: randomBytes(32).toString('hex'),
      EndpointID: randomBytes(32).toString('hex'),
      Interface: { Address: '10.99.0.2/24' },
      Options: {},
    });
    expect(unknown.status).toBe(400);

    const after = (await scrape(h.ns, port)).body;
    const calls = (method: string, outcome = 'ok') => value(after, 'tsnet_plugin_calls_total', { method, outcome });
    expect([calls('NetworkDriver.CreateNetwork'), calls('NetworkDriver.CreateEndpoint'), calls('NetworkDriver.Join')]).toEqual([1, 1, 1]);
    expect(calls('NetworkDriver.CreateEndpoint', 'TSN_UNKNOWN_NETWORK')).toBe(1);
    expect(value(after, 'tsnet_plugin_call_duration_seconds_count', { method: 'NetworkDriver.CreateNetwork' })).toBe(1);
    expect(value(after, 'tsnet_plugin_call_duration_seconds_sum', { method: 'NetworkDriver.CreateNetwork' })).toBeGreaterThan(0);
    // The bridge and the veth went through ip -batch, the firewall through nft: timed, and more than nothing.
    for (const step of ['ip.batch', 'nft']) {
      const before = value(first.body, 'tsnet_kernel_step_duration_seconds_count', { step, outcome: 'ok' });
      expect(value(after, 'tsnet_kernel_step_duration_seconds_count', { step, outcome: 'ok' })).toBeGreaterThan(before);
      expect(value(after, 'tsnet_kernel_step_duration_seconds_sum', { step, outcome: 'ok' })).toBeGreaterThan(0);
    }
    expect(value(after, 'tsnet_store_commit_duration_seconds_count', { outcome: 'ok' })).toBeGreaterThanOrEqual(2);

    expect((await scrape(h.ns, port, 'POST')).status).toBe(405);
  });
});
