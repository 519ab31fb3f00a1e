import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { httpStatus, tsnetError } from '../errors';
import { elapsed, emit } from '../telemetry/hook';
import { MAX_BODY_BYTES, parseBody } from './body';
import { type CallGate, SHUTTING_DOWN } from './gate';

/** The handshake's reply: tsnet is both a network driver and an IPAM driver. */
export const HANDSHAKE = { Implements: ['NetworkDriver', 'IpamDriver'] } as const;

export const CONTENT_TYPE = 'application/vnd.docker.plugins.v1+json';

/**
 * The plugin socket's handler from the moment it listens until the wire (express and zod, ~0.15 s to load) is
 * attached: dockerd's handshake, which it waits on at boot, is answered at once; every other call is held, its body
 * unread, and handed to the wire when it comes. A handshake whose body the wire would refuse is held too (its body
 * read, as the wire's body parser leaves a finished request), so the wire gives its one error for it.
 */
export class EarlyHandler {
  private app: RequestListener | undefined;
  private readonly held: Array<[IncomingMessage, ServerResponse]> = [];

  constructor(private readonly gate: CallGate) {}

  readonly listener: RequestListener = (req, res) => {
    if (this.app) this.app(req, res);
    else if (req.method === 'POST' && req.url === '/Plugin.Activate') this.handshake(req, res);
    else this.held.push([req, res]);
  };

  /** From now on `app` serves every call, first the held ones in their order. */
  attach(app: RequestListener): void {
    this.app = app;
    for (const [req, res] of this.held.splice(0)) app(req, res);
  }

  private handshake(req: IncomingMessage, res: ServerResponse): void {
    const start = performance.now();
    const chunks: Buffer[] = [];
    let bytes = 0;
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on('end', () => {
      if (bytes > MAX_BODY_BYTES) {
        reply(res, 400, { Err: `invalid request: the body of Plugin.Activate is over ${MAX_BODY_BYTES} bytes` });
        return;
      }
      const text = Buffer.concat(chunks).toString('utf8');
      const body = parseBody(text);
      if (!body.ok || typeof body.value !== 'object' || body.value === null || Array.isArray(body.value)) {
        // The wire's body parser takes a finished request's `body` as read.
        Object.assign(req, { body: text });
        if (this.app) this.app(req, res);
        else this.held.push([req, res]);
        return;
      }
      if (!this.gate.enter()) {
        reply(res, httpStatus(tsnetError('TSN_SHUTTING_DOWN', SHUTTING_DOWN)), { Err: SHUTTING_DOWN });
        return;
      }
      res.once('close', () => this.gate.leave());
      reply(res, 200, HANDSHAKE);
      // Counted as the wire counts it (the hook keeps events from before a sink is attached).
      emit({ kind: 'call', method: 'Plugin.Activate', outcome: 'ok', ms: elapsed(start) });
    });
  }
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'Content-Type': CONTENT_TYPE }).end(JSON.stringify(body));
}
