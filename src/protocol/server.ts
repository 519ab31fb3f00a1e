import fs from 'node:fs';
import type { Server } from 'node:http';
import path from 'node:path';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { z } from 'zod';
import { asTsnetError, describeChain, httpStatus, tsnetError } from '../errors';
import { log, since, withLogContext } from '../log';
import type { Backend, Route } from './routes';

const CONTENT_TYPE = 'application/vnd.docker.plugins.v1+json';

/** `field "path": message (got <value>)` for the first schema issue: the user sees which field and which value. */
export function describeIssues(error: z.ZodError, input: unknown): string {
  const issue = error.issues[0]!;
  let value: unknown = input;
  for (const key of issue.path) value = value !== null && typeof value === 'object' ? (value as Record<PropertyKey, unknown>)[key] : undefined;
  const field = issue.path.length > 0 ? issue.path.join('.') : 'body';
  const got = value === undefined ? 'missing' : JSON.stringify(value);
  const more = error.issues.length > 1 ? ` (and ${error.issues.length - 1} more)` : '';
  return `invalid request: field "${field}": ${issue.message} (got ${got && got.length > 120 ? got.slice(0, 117) + '...' : got})${more}`;
}

function send(res: Response, status: number, body: unknown): void {
  res.status(status).type(CONTENT_TYPE).send(JSON.stringify(body));
}

/**
 * The HTTP side of the plugin: parses any body as JSON (dockerd sends no Content-Type, and empty bodies for
 * argument-less calls), validates it against the route's schema, runs the handler with the call's ids in the log
 * context, and answers `{"Err"}` with the catalogue's status on failure. Non-static calls wait for `ready`
 * (kernel reconciled with the store); the handshake is answered at once.
 */
export function createApp(table: Record<string, Route>, backend: Backend, ready: Promise<void>): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(express.text({ type: () => true, limit: '4mb' }));

  app.post('/:method', (req: Request, res: Response) => {
    const method = req.params.method as string;
    const r = Object.hasOwn(table, method) ? table[method] : undefined;
    if (!r) {
      log.debug('plugin call not implemented', { call: method });
      send(res, 404, { Err: `${method} is not implemented by tsnet` });
      return;
    }
    const start = performance.now();
    const text = typeof req.body === 'string' ? req.body.trim() : '';
    let input: unknown;
    try {
      input = text === '' ? {} : JSON.parse(text);
    } catch {
      const msg = `invalid request: body of ${method} is not JSON (got ${JSON.stringify(text.slice(0, 60))})`;
      log.warn('plugin call rejected', { call: method, error: msg });
      send(res, 400, { Err: msg });
      return;
    }
    const parsed = r.schema.safeParse(input);
    if (!parsed.success) {
      const msg = describeIssues(parsed.error, input);
      log.warn('plugin call rejected', { call: method, error: msg });
      send(res, 400, { Err: msg });
      return;
    }
    const ctx = { call: method, ...(r.ids ? r.ids(parsed.data) : {}) };
    void withLogContext(ctx, async () => {
      try {
        if (!r.static) await ready;
        const reply = await r.handle(parsed.data, backend);
        log.debug('plugin call', { ms: since(start), request: input, reply });
        send(res, 200, reply);
      } catch (err) {
        const e = asTsnetError(err);
        const status = httpStatus(e);
        log.log(status >= 500 ? 'error' : 'warn', 'plugin call failed', { code: e.code, error: describeChain(e), ms: since(start), request: input });
        send(res, status, { Err: describeChain(e) });
      }
    });
  });

  app.use((_req: Request, res: Response) => send(res, 404, { Err: 'not found' }));
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const e = asTsnetError(err);
    send(res, httpStatus(e) === 500 ? 400 : httpStatus(e), { Err: `invalid request: ${describeChain(e)}` });
  });
  return app;
}

/** Listens on the unix socket, replacing a stale socket file left by a crash (but never a regular file). */
export async function listenUnix(app: express.Express, socket: string): Promise<Server> {
  fs.mkdirSync(path.dirname(socket), { recursive: true, mode: 0o755 });
  try {
    const st = fs.lstatSync(socket);
    if (!st.isSocket()) throw tsnetError('TSN_INVALID_OPTION', `socket path ${socket} exists and is not a socket`);
    fs.unlinkSync(socket);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return new Promise((resolve, reject) => {
    const server = app.listen(socket, () => {
      fs.chmodSync(socket, 0o660);
      resolve(server);
    });
    server.on('error', reject);
  });
}
