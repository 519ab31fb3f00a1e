/**
 * A DNS listener: UDP and TCP on one address and port, handing raw queries to a QueryHandler. TCP connections
 * carry pipelined queries (answers go out as they are ready), idle out, are capped in number, in message size and
 * in queries in flight. Nothing a client sends can throw out of a socket handler.
 */

import dgram from 'node:dgram';
import net from 'node:net';
import { tsnetError } from '../errors';
import { errorExcerpt, logSafely } from '../log';
import { canonicalAddress } from '../netaddr';
import type { ListenerSpec, QueryContext, QueryHandler, Transport } from './contract';
import { realTimer, type StartTimer } from './timer';

export interface ListenerOptions {
  /** A TCP connection with nothing received for this long is closed (RFC 7766 suggests seconds). */
  idleTimeoutMs?: number;
  maxConnections?: number;
  /** Largest TCP query accepted; a longer frame closes the connection. */
  maxMessage?: number;
  /** Queries of one connection being answered at once; reading pauses beyond it. */
  maxInFlight?: number;
  /**
   * Reply bytes queued for a client that does not read: reading its queries pauses at it, and a reply that finds
   * the queue full ends the connection (at most this plus one reply is ever queued).
   */
  maxQueued?: number;
  /** For tests: the idle timer's clock. */
  startTimer?: StartTimer;
}

export interface DnsListener {
  readonly address: string;
  /** The port bound (the same for UDP and TCP, also when the spec asked for port 0). */
  readonly port: number;
  close(): Promise<void>;
}

const DEFAULTS = { idleTimeoutMs: 10_000, maxConnections: 256, maxMessage: 4096, maxInFlight: 64, maxQueued: 256 * 1024 };
/** Attempts at finding a port free for both UDP and TCP when the spec asks for an ephemeral one. */
const EPHEMERAL_TRIES = 8;

/** Runs the handler; a throw or a rejection is logged and counts as "no reply". */
function answer(handler: QueryHandler, msg: Buffer, ctx: QueryContext, reply: (r: Buffer | null) => void): void {
  const failed = (err: unknown) => {
    logSafely('warn', 'dns: query handler failed', { transport: ctx.transport, error: errorExcerpt(err) });
    reply(null);
  };
  try {
    const r = handler(msg, ctx);
    if (r instanceof Promise) r.then(reply, failed);
    else reply(r);
  } catch (err) {
    failed(err);
  }
}

function bindUdp(spec: ListenerSpec, port: number): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const v6 = net.isIPv6(spec.address);
    const sock = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', ipv6Only: v6 });
    sock.once('error', (err) => {
      sock.close();
      reject(err);
    });
    sock.bind({ address: spec.address, port, exclusive: true }, () => {
      sock.removeAllListeners('error');
      resolve(sock);
    });
  });
}

function bindTcp(server: net.Server, spec: ListenerSpec, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: spec.address, port, ipv6Only: net.isIPv6(spec.address), exclusive: true }, () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
}

function closeUdp(sock: dgram.Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      sock.close(() => resolve());
    } catch {
      resolve();
    }
  });
}

export async function openListener(spec: ListenerSpec, handler: QueryHandler, opts: ListenerOptions = {}): Promise<DnsListener> {
  const o = { ...DEFAULTS, ...opts };
  const startTimer = opts.startTimer ?? realTimer;
  const where = `${spec.address}:${spec.port}`;
  const context = (transport: Transport, source: string): QueryContext => ({
    transport,
    // As QueryContext wants it: IPv4-mapped IPv6 as IPv4, no zone id.
    source: canonicalAddress(source),
    networkId: spec.networkId,
    localAddress: spec.address,
    mayForward: !spec.noForward,
  });

  const conns = new Set<net.Socket>();
  const tcp = net.createServer({ noDelay: true }, (sock) => serveTcp(sock));
  tcp.maxConnections = o.maxConnections;

  function serveTcp(sock: net.Socket): void {
    conns.add(sock);
    const ctx = context('tcp', sock.remoteAddress ?? '');
    let pending = Buffer.alloc(0);
    let inFlight = 0;
    let cancelIdle = () => {};
    const touch = () => {
      cancelIdle();
      cancelIdle = startTimer(() => sock.destroy(), o.idleTimeoutMs);
    };
    const send = (r: Buffer | null) => {
      inFlight--;
      if (sock.destroyed) return;
      // A query that gets no reply (malformed beyond FORMERR) ends the connection: the stream cannot be trusted.
      if (r === null) return void sock.destroy();
      // Reading stopped at maxQueued, but answers still in flight (forwarded) would pile up behind a client that does
      // not read: one that finds the queue full ends the connection instead.
      if (sock.writableLength >= o.maxQueued) return void sock.destroy();
      const framed = Buffer.allocUnsafe(r.length + 2);
      framed.writeUInt16BE(r.length, 0);
      r.copy(framed, 2);
      sock.write(framed);
      touch();
      resumeIfRoom();
    };
    const busy = () => inFlight >= o.maxInFlight || sock.writableLength >= o.maxQueued;
    /** Answers the whole frames received so far, stopping (and pausing reads) while the client is behind. */
    const serveFrames = () => {
      while (pending.length >= 2 && !sock.destroyed && !busy()) {
        const len = pending.readUInt16BE(0);
        if (len === 0 || len > o.maxMessage) return void sock.destroy();
        if (pending.length < len + 2) break;
        const msg = Buffer.from(pending.subarray(2, len + 2));
        pending = pending.subarray(len + 2);
        touch();
        inFlight++;
        answer(handler, msg, ctx, send);
      }
      if (busy()) sock.pause();
    };
    const resumeIfRoom = () => {
      if (busy() || !sock.isPaused()) return;
      sock.resume();
      serveFrames();
    };
    sock.on('drain', resumeIfRoom);
    touch();
    // Only whole queries and replies count as activity: a client trickling a frame byte by byte idles out.
    sock.on('data', (chunk) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      serveFrames();
    });
    sock.on('error', () => sock.destroy());
    sock.on('close', () => {
      cancelIdle();
      conns.delete(sock);
    });
  }

  let udp: dgram.Socket | undefined;
  let lastErr: unknown;
  for (let attempt = 0; attempt < (spec.port === 0 ? EPHEMERAL_TRIES : 1) && !udp; attempt++) {
    let sock: dgram.Socket;
    try {
      sock = await bindUdp(spec, spec.port);
    } catch (err) {
      throw tsnetError('TSN_DNS', `DNS listener ${where}: UDP bind failed`, err);
    }
    try {
      await bindTcp(tcp, spec, sock.address().port);
      udp = sock;
    } catch (err) {
      lastErr = err;
      await closeUdp(sock);
    }
  }
  if (!udp) throw tsnetError('TSN_DNS', `DNS listener ${where}: TCP bind failed`, lastErr);

  const sock = udp;
  const port = sock.address().port;
  sock.on('message', (msg, rinfo) => {
    answer(handler, msg, context('udp', rinfo.address), (r) => {
      if (!r) return;
      try {
        sock.send(r, rinfo.port, rinfo.address, () => undefined);
      } catch {
        // closed meanwhile (a forwarded answer arriving after close()): nobody to tell
      }
    });
  });
  // A send to an unreachable client or a full buffer must not end the listener.
  sock.on('error', (err) => logSafely('debug', 'dns: UDP socket error', { listener: where, error: errorExcerpt(err) }));
  tcp.on('error', (err) => logSafely('warn', 'dns: TCP listener error', { listener: where, error: errorExcerpt(err) }));

  return {
    address: spec.address,
    port,
    async close() {
      const tcpClosed = new Promise<void>((resolve) => tcp.close(() => resolve()));
      for (const c of conns) c.destroy();
      await Promise.all([tcpClosed, closeUdp(sock)]);
    },
  };
}
