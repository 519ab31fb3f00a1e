import http from 'node:http';
import { loadConfig, parseMetricsListen } from '../../src/config';
import { listenMetrics, type MetricsListener } from '../../src/telemetry/listener';

/** One request to the listener on loopback; resolves with the status, headers and body. */
function request(port: number, method: string, path: string): Promise<{ status: number; type: string; allow?: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), allow: res.headers.allow, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('--metrics-listen: GET /metrics only', () => {
  let listener: MetricsListener;
  let fail = false;
  beforeAll(async () => {
    const source = {
      render: () => (fail ? Promise.reject(new Error('registry broke')) : Promise.resolve('tsnet_up 1\n')),
      contentType: 'text/plain; version=0.0.4; charset=utf-8',
    };
    listener = await listenMetrics({ host: '127.0.0.1', port: 0 }, source);
  });
  afterAll(() => listener.close());

  test('GET /metrics serves the exposition text with its content type', async () => {
    expect(listener.address.port).toBeGreaterThan(0);
    const res = await request(listener.address.port, 'GET', '/metrics');
    expect(res).toMatchObject({ status: 200, type: 'text/plain; version=0.0.4; charset=utf-8', body: 'tsnet_up 1\n' });
    expect((await request(listener.address.port, 'GET', '/metrics?x=1')).status).toBe(200);
  });

  test('any other path is 404, any other method 405 naming GET', async () => {
    expect((await request(listener.address.port, 'GET', '/')).status).toBe(404);
    expect((await request(listener.address.port, 'GET', '/metrics/x')).status).toBe(404);
    const post = await request(listener.address.port, 'POST', '/metrics');
    expect(post).toMatchObject({ status: 405, allow: 'GET' });
    expect(post.body).not.toContain('tsnet_up');
    expect((await request(listener.address.port, 'DELETE', '/metrics')).status).toBe(405);
  });

  test('a render that fails is a 500, and the listener goes on serving', async () => {
    fail = true;
    const res = await request(listener.address.port, 'GET', '/metrics');
    expect(res.status).toBe(500);
    expect(res.body).not.toContain('registry broke');
    fail = false;
    expect((await request(listener.address.port, 'GET', '/metrics')).status).toBe(200);
  });

  test('an address taken is refused naming it', async () => {
    await expect(listenMetrics({ host: '127.0.0.1', port: listener.address.port }, { render: () => Promise.resolve(''), contentType: 'text/plain' })).rejects.toThrow(
      `metrics-listen 127.0.0.1:${listener.address.port}: cannot listen`,
    );
  });
});

describe('config: --metrics-listen / TSNET_METRICS_LISTEN', () => {
  const saved = process.env.TSNET_METRICS_LISTEN;
  afterEach(() => {
    if (saved === undefined) delete process.env.TSNET_METRICS_LISTEN;
    else process.env.TSNET_METRICS_LISTEN = saved;
  });

  test('off by default', () => {
    delete process.env.TSNET_METRICS_LISTEN;
    const c = loadConfig([]);
    expect(c !== 'help' && c.metricsListen).toBeFalsy();
  });

  test('the flag wins over the environment', () => {
    process.env.TSNET_METRICS_LISTEN = '127.0.0.1:9100';
    const c = loadConfig(['--metrics-listen', '[::1]:9200']);
    expect(c !== 'help' && c.metricsListen).toEqual({ host: '::1', port: 9200 });
    const e = loadConfig([]);
    expect(e !== 'help' && e.metricsListen).toEqual({ host: '127.0.0.1', port: 9100 });
  });

  test.each(['127.0.0.1', ':9100', 'localhost:9100', '127.0.0.1:0', '127.0.0.1:65536', '::1:9100', '[::1]', '127.0.0.1:91a', '[nope]:9100'])(
    'refuses %p naming the option',
    (spec) => {
      expect(() => parseMetricsListen(spec)).toThrow(/^metrics-listen/);
    },
  );
});
