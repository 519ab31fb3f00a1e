import http from 'node:http';
import type { AdminError, PortsReport, ReconcileReport, StatusReport } from './contract';

/** How long the CLI waits for an answer (a reconcile of thousands of endpoints takes seconds). */
const TIMEOUT_MS = 60_000;
/** Cap on an answer: status of 10,000 endpoints is a few MiB. */
const MAX_BYTES = 64 * 1024 * 1024;

/** Why the admin socket gave no answer: tsnet is not running there, or it answered an error. */
export class AdminRequestError extends Error {
  constructor(
    message: string,
    /** Undefined when nothing answered (no daemon on the socket). */
    readonly status?: number,
  ) {
    super(message);
    this.name = 'AdminRequestError';
  }
}

function errText(body: unknown): string | undefined {
  const err: unknown = body !== null && typeof body === 'object' ? Reflect.get(body, 'Err') : undefined;
  return typeof err === 'string' ? err : undefined;
}

/** The `tsnet` CLI's side of the admin socket (src/admin/server.ts); the answers are the daemon's own JSON. */
export class AdminClient {
  constructor(readonly socket: string) {}

  async status(): Promise<StatusReport> {
    // The shapes are the daemon's (contract.ts), built by the same release of tsnet.
    // eslint-disable-next-line @typescript-eslint/no-unsafe-type-assertion
    return (await this.json('GET', '/status')) as StatusReport;
  }

  async ports(container?: string): Promise<PortsReport> {
    const q = container === undefined ? '' : `?container=${encodeURIComponent(container)}`;
    // eslint-disable-next-line @typescript-eslint/no-unsafe-type-assertion
    return (await this.json('GET', `/ports${q}`)) as PortsReport;
  }

  /** The plan (`apply` false: nothing changes) or what was applied. */
  async reconcile(apply: boolean): Promise<ReconcileReport> {
    // eslint-disable-next-line @typescript-eslint/no-unsafe-type-assertion
    return (await this.json(apply ? 'POST' : 'GET', '/reconcile')) as ReconcileReport;
  }

  async metrics(): Promise<string> {
    return (await this.request('GET', '/metrics')).text;
  }

  private async json(method: string, path: string): Promise<unknown> {
    const { text } = await this.request(method, path);
    try {
      return JSON.parse(text);
    } catch {
      throw new AdminRequestError(`${method} ${path} on ${this.socket}: the answer is not JSON`, 200);
    }
  }

  private request(method: string, path: string): Promise<{ text: string }> {
    return new Promise((resolve, reject) => {
      const req = http.request({ socketPath: this.socket, method, path, timeout: TIMEOUT_MS }, (res) => {
        const chunks: Buffer[] = [];
        let bytes = 0;
        res.on('data', (c: Buffer) => {
          bytes += c.length;
          if (bytes > MAX_BYTES) req.destroy(new AdminRequestError(`${method} ${path}: answer larger than ${MAX_BYTES} bytes`));
          else chunks.push(c);
        });
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status === 200) {
            resolve({ text });
            return;
          }
          let body: AdminError | undefined;
          try {
            const parsed: unknown = JSON.parse(text);
            const err = errText(parsed);
            body = err === undefined ? undefined : { Err: err };
          } catch {
            body = undefined;
          }
          reject(new AdminRequestError(body?.Err ?? `${method} ${path}: HTTP ${status}`, status));
        });
      });
      req.on('timeout', () => req.destroy(new AdminRequestError(`${method} ${path} on ${this.socket}: no answer after ${TIMEOUT_MS / 1000} s`)));
      req.on('error', (err) => reject(err instanceof AdminRequestError ? err : new AdminRequestError(`tsnet's admin socket ${this.socket} does not answer (is the daemon running?): ${err.message}`)));
      req.end();
    });
  }
}
