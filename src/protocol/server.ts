import express, { type NextFunction, type Request, type Response } from 'express';
import type { z } from 'zod';
import { asTsnetError, describeChain, httpStatus, tsnetError } from '../errors';
import { excerpt, logSafely, since, withLogContext } from '../log';
import { elapsed, emit } from '../telemetry/hook';
import { MAX_BODY_BYTES, parseBody } from './body';
import { CONTENT_TYPE } from './early';
import { CallGate, SHUTTING_DOWN } from './gate';
import type { Backend, Route } from './routes';

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
  app.use(express.text({ type: () => true, limit: MAX_BODY_BYTES }));

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
