/**
 * `--metrics-listen`: an HTTP listener serving `GET /metrics` and nothing else. It reads no request body, keeps
 * few connections and short timeouts: whoever can reach the address can only ask for the metrics.
 */

import http from 'node:http';
import { describeBriefly, tsnetError } from '../errors';
import { logSafely } from '../log';

export interface MetricsAddress {
  host: string;
  port: number;
}

/** What the listener serves: the exposition text and its content type. */
export interface MetricsSource {
  render(): Promise<string>;
  readonly contentType: string;
}

/** Scrapers (Prometheus, curl) need only a few at once. */
const MAX_CONNECTIONS = 16;
const TIMEOUT_MS = 10_000;

function reply(res: http.ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', ...headers });
  res.end(text);
}

export interface MetricsListener {
  /** The address bound (the port is the kernel's pick when 0 was asked for). */
  readonly address: MetricsAddress;
  close(): Promise<void>;
}

export async function listenMetrics(where: MetricsAddress, source: MetricsSource): Promise<MetricsListener> {
  const server = http.createServer((req, res) => {
    // The path without a query string (Prometheus sends none; curl users may).
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') {
      reply(res, 404, 'not found: only /metrics is served here\n');
      return;
    }
    if (req.method !== 'GET') {
      reply(res, 405, 'method not allowed: only GET\n', { allow: 'GET' });
      return;
    }
    source.render().then(
      (text) => reply(res, 200, text, { 'content-type': source.contentType }),
      (err: unknown) => {
        logSafely('error', 'metrics: rendering failed', { error: describeBriefly(err) });
        reply(res, 500, 'metrics could not be rendered\n');
      },
    );
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.requestTimeout = TIMEOUT_MS;
  server.headersTimeout = TIMEOUT_MS;
  server.keepAliveTimeout = TIMEOUT_MS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(tsnetError('TSN_INVALID_OPTION', `metrics-listen ${where.host}:${where.port}: cannot listen`, err)));
    server.listen({ host: where.host, port: where.port, exclusive: true }, () => resolve());
  });
  server.on('error', (err) => logSafely('warn', 'metrics: listener error', { error: describeBriefly(err) }));
  // Listening on a host and port, the address is an AddressInfo (a string only for pipes).
  const bound = server.address();
  return {
    address: { host: where.host, port: typeof bound === 'object' && bound !== null ? bound.port : where.port },
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
