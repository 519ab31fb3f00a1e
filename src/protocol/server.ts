import fs from 'node:fs';
import type { Server } from 'node:http';
import net from 'node:net';
import path from 'node:path';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { z } from 'zod';
import { asTsnetError, describeChain, errnoCode, httpStatus, tsnetError } from '../errors';
import { excerpt, logSafely, since, withLogContext } from '../log';
import { elapsed, emit } from '../telemetry/hook';
import { parseBody } from './body';
import type { Backend, Route } from './routes';

const CONTENT_TYPE = 'application/vnd.docker.plugins.v1+json';

/** `text` cut to `max` characters, marked with `...` where it was cut. */
function cut(text: string, max: number): string {
  return text.length > max ? text.slice(0, max - 3) + '...' : text;
}

/** `field "path": message (got <value>)` for the first schema issue: the user sees which field and which value. */
export function describeIssues(error: z.ZodError, input: unknown): string {
  const issue = error.issues[0];
  let value: unknown = input;
  for (const key of issue.path) {
    const inner: unknown = value !== null && typeof value === 'object' ? Reflect.get(value, key) : undefined;
    value = inner;
  }
  // Record keys are caller data too: each path segment is cut like the value.
  const field = issue.path.length > 0 ? issue.path.map((k) => cut(String(k), 64)).join('.') : 'body';
  const got = value === undefined ? 'missing' : JSON.stringify(value);
  const more = error.issues.length > 1 ? ` (and ${error.issues.length - 1} more)` : '';
  return `invalid request: field "${field}": ${issue.message} (got ${cut(got, 120)})${more}`;
}

function send(res: Response, status: number, body: unknown): void {
  res.status(status).type(CONTENT_TYPE).send(JSON.stringify(body));
}

interface Failure {
  status: number;
  code: string;
  text: string;
}

/** Status, code and message for anything thrown; a value that cannot even be described still gets an answer. */
function failure(err: unknown): Failure {
  try {
    const e = asTsnetError(err);
    return { status: httpStatus(e), code: e.code, text: describeChain(e) };
  } catch {
    return { status: 500, code: 'TSN_INTERNAL', text: 'unexpected internal error (the thrown value cannot be described)' };
  }
}

/** What a log line says about a request: never the raw body, only its size and a capped excerpt. */
function summary(text: string, input: unknown): { bytes: number; request: string } {
  return { bytes: Buffer.byteLength(text), request: excerpt(input) };
}

/** What a call that comes in during shutdown gets (dockerd shows it as the call's error). */
export const SHUTTING_DOWN = 'tsnet is shutting down';

/**
 * Counts the plugin calls in flight, so shutdown can refuse new ones and wait for the rest. A call leaves when its
 * reply is written (or its connection dies), not when its handler returns.
 */
export class CallGate {
  private closed = false;
  private inFlight = 0;
  private idle: Array<() => void> = [];

  /** False once closed: the caller answers {@link SHUTTING_DOWN}. */
  enter(): boolean {
    if (this.closed) return false;
    this.inFlight++;
    return true;
  }

  leave(): void {
    this.inFlight--;
    if (this.inFlight === 0) for (const wake of this.idle.splice(0)) wake();
  }

  get active(): number {
    return this.inFlight;
  }

  /** From now on every call is refused; resolves when none is in flight (at once if none is). */
  close(): Promise<void> {
    this.closed = true;
    return this.inFlight === 0 ? Promise.resolve() : new Promise((resolve) => this.idle.push(resolve));
  }
}

/**
 * The HTTP side of the plugin: parses any body as JSON (dockerd sends no Content-Type, and empty bodies for
 * argument-less calls) with a nesting cap, validates it against the route's schema, runs the handler with the call's
 * ids in the log context, and answers `{"Err"}` with the catalogue's status on failure. A call waits for what its
 * route needs: nothing (the handshake), `loaded` (the state), or `ready` too (the kernel reconciled with it), so the
 * socket can listen before either. Every request ends in exactly one reply, whatever the handler throws and even if
 * logging it throws. Once `gate` is closed (shutdown), every call, the handshake included, is answered 503
 * {@link SHUTTING_DOWN} before its body is read.
 */
export function createApp(table: Record<string, Route>, loaded: Promise<Backend>, ready: Promise<void>, gate = new CallGate()): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.use((_req: Request, res: Response, next: NextFunction) => {
    if (!gate.enter()) {
      send(res, httpStatus(tsnetError('TSN_SHUTTING_DOWN', SHUTTING_DOWN)), { Err: SHUTTING_DOWN });
      return;
    }
    res.once('close', () => gate.leave());
    next();
  });
  app.use(express.text({ type: () => true, limit: '4mb' }));

  app.post('/:method', async (req: Request, res: Response) => {
    // One path segment, so always a string; typed wider because express also serves wildcard params.
    const method = String(req.params.method);
    const start = performance.now();
    // Only methods of the table become a label: the path is the caller's text.
    const known = Object.hasOwn(table, method);
    const done = (outcome: string) => emit({ kind: 'call', method: known ? method : 'unknown', outcome, ms: elapsed(start) });
    try {
      const r = known ? table[method] : undefined;
      if (!r) {
        logSafely('debug', 'plugin call not implemented', { call: excerpt(method) });
        send(res, 404, { Err: `${method} is not implemented by tsnet` });
        done('not-implemented');
        return;
      }
      const text = typeof req.body === 'string' ? req.body : '';
      const body = parseBody(text);
      if (!body.ok) {
        const msg = `invalid request: field "body" of ${method}: ${body.reason}`;
        logSafely('warn', 'plugin call rejected', { call: method, error: msg, bytes: Buffer.byteLength(text) });
        send(res, 400, { Err: msg });
        done('TSN_INVALID_REQUEST');
        return;
      }
      const input = body.value;
      const parsed = r.schema.safeParse(input);
      if (!parsed.success) {
        const msg = describeIssues(parsed.error, input);
        logSafely('warn', 'plugin call rejected', { call: method, error: msg, ...summary(text, input) });
        send(res, 400, { Err: msg });
        done('TSN_INVALID_REQUEST');
        return;
      }
      const ctx = { call: method, ...(r.ids ? r.ids(parsed.data) : {}) };
      await withLogContext(ctx, async () => {
        try {
          const reply = await answer(r, parsed.data, loaded, ready);
          const payload = JSON.stringify(reply);
          logSafely('debug', 'plugin call', { ms: since(start), ...summary(text, input), reply: excerpt(reply) });
          res.status(200).type(CONTENT_TYPE).send(payload);
          done('ok');
        } catch (err) {
          const f = failure(err);
          logSafely(f.status >= 500 ? 'error' : 'warn', 'plugin call failed', { code: f.code, error: f.text, ms: since(start), ...summary(text, input) });
          send(res, f.status, { Err: f.text });
          done(f.code);
        }
      });
    } catch (err) {
      // Last resort (e.g. the reply itself failed): one answer, never an unhandled rejection.
      const f = failure(err);
      logSafely('error', 'plugin call failed unexpectedly', { call: excerpt(method), code: f.code, error: f.text });
      if (!res.headersSent) send(res, 500, { Err: f.text });
      done(f.code);
    }
  });

  app.use((_req: Request, res: Response) => send(res, 404, { Err: 'not found' }));
  // express tells error handlers by their four parameters, so `_next` must be declared.
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const f = failure(err);
    send(res, f.status === 500 ? 400 : f.status, { Err: `invalid request: ${f.text}` });
  });
  return app;
}

/** Runs the route's handler once what it waits for is there. */
async function answer(r: Route, req: unknown, loaded: Promise<Backend>, ready: Promise<void>): Promise<unknown> {
  switch (r.wait) {
    case 'nothing':
      return r.handle(req);
    case 'state':
      return r.handle(req, await loaded);
    case undefined:
    case 'reconciled': {
      const backend = await loaded;
      await ready;
      return r.handle(req, backend);
    }
  }
}

/** Whether something accepts connections on the unix socket `socket`. */
function served(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socket, () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
}

/**
 * Shutdown of plugin calls: new ones are refused at once, those in flight get up to `graceMs` to finish. Resolves
 * with the number still running when the grace ran out (cut off when the socket closes).
 */
export async function drain(gate: CallGate, graceMs: number): Promise<number> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
  await Promise.race([gate.close(), expired]);
  clearTimeout(timer);
  return gate.active;
}

/**
 * Closes the listener (which unlinks the socket file, so dockerd fails fast instead of retrying a dead socket) and
 * every connection, idle or not.
 */
export async function closeServer(server: Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  await closed;
}

/** Idle plugin connections stay open this long: longer than any client keeps them. */
export const KEEP_ALIVE_MS = 10 * 60_000;

/**
 * Listens on the unix socket with mode 0660 from the moment it exists. The umask is narrowed only around the bind,
 * which Node does synchronously inside listen(), so no other file of this process is created under it and no
 * connection can come in before the mode is right (a chmod after listen leaves that window). A stale socket file
 * left by a crash is replaced; a socket another process is serving, or a path that is not a socket, is refused.
 */
export async function listenUnix(app: express.Express, socket: string): Promise<Server> {
  fs.mkdirSync(path.dirname(socket), { recursive: true, mode: 0o755 });
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(socket);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  if (st) {
    if (!st.isSocket()) throw tsnetError('TSN_INVALID_OPTION', `socket path ${socket} exists and is not a socket`);
    if (await served(socket)) throw tsnetError('TSN_STATE_LOCKED', `socket ${socket} is in use by another process (another tsnet?)`);
    fs.unlinkSync(socket);
  }
  return new Promise((resolve, reject) => {
    const old = process.umask(0o117);
    let server: Server;
    try {
      server = app.listen(socket, () => resolve(server));
    } finally {
      process.umask(old);
    }
    server.on('error', reject);
    // dockerd's plugin client reuses idle connections (Go keeps them 90 s): a server closing one first (Node's default
    // after 5 s) races a request sent on it, which dockerd resends with an empty body. The client closes first.
    server.keepAliveTimeout = KEEP_ALIVE_MS;
  });
}
