/**
 * Relays queries tsnet does not answer to the upstream resolvers. The client's raw query goes out with a fresh
 * random ID over one UDP socket per address family, renewed (a new ephemeral source port) every 256 queries; TCP
 * for TCP clients and after a truncated UDP reply. A reply
 * is accepted only from the upstream's address and port, with that ID and the question echoed. Each try has its
 * own timeout, then the next upstream is tried, within an overall bound after which the client gets SERVFAIL.
 * Identical questions in flight share one exchange; successful replies are cached (src/dns/cache.ts).
 * Nothing here waits on anything but the query at hand.
 */

import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import type { DnsUpstream } from '../config';
import { describeBriefly } from '../errors';
import { log } from '../log';
import { canonicalAddress } from '../netaddr';
import { cacheKey, type DnsCache } from './cache';
import type { Forwarder, Query, Transport } from './contract';
import { answersQuestion, walkMessage } from './message';
import { realTimer, type StartTimer } from './timer';
import type { Upstreams } from './upstreams';
import { F_TC, RCODE, rcodeResponse } from './wire';

const logger = log.child({ component: 'dns-forwarder' });

export interface ForwarderOptions {
  upstreams: Upstreams;
  /** No cache when absent. */
  cache?: DnsCache;
  timer?: StartTimer;
  /** One try of one upstream (default 1500 ms). */
  tryTimeoutMs?: number;
  /** The whole query, every try included (default 4000 ms): then SERVFAIL. */
  overallTimeoutMs?: number;
  /** Client queries waiting on upstreams at most (default 1000); one more gets SERVFAIL at once. */
  maxPending?: number;
  /**
   * Queries per UDP socket before new ones go through a fresh socket on a new ephemeral port (default 256): a
   * spoofer who learnt the source port must guess it again, not only the 16-bit ID.
   */
  rotateAfter?: number;
}

const DEFAULT_TRY_TIMEOUT_MS = 1500;
const DEFAULT_OVERALL_TIMEOUT_MS = 4000;
const DEFAULT_MAX_PENDING = 1000;
const DEFAULT_ROTATE_AFTER = 256;
/** IDs are drawn from 65536 per socket: the cap keeps a free one quick to find. */
const MAX_PENDING_LIMIT = 16_384;
/** Rounds through the upstream list at most, so failures that come back at once never spin until the bound. */
const ROUNDS = 3;

interface PendingTry {
  address: string;
  port: number;
  msg: Buffer;
  questionEnd: number;
  done: (reply: Buffer | undefined) => void;
}

interface UdpSocket {
  socket: dgram.Socket;
  pending: Map<number, PendingTry>;
  /** Queries sent through it: after {@link ForwarderOptions.rotateAfter} it takes no new ones. */
  sent: number;
}

export class UpstreamForwarder implements Forwarder {
  private readonly upstreams: Upstreams;
  private readonly cache: DnsCache | undefined;
  private readonly timer: StartTimer;
  private readonly tryTimeoutMs: number;
  private readonly overallTimeoutMs: number;
  private readonly maxPending: number;
  private readonly rotateAfter: number;
  /** The socket new queries of each family go through. */
  private readonly sockets = new Map<4 | 6, UdpSocket>();
  /** Rotated-out sockets still waiting on replies; closed when the last one settles. */
  private readonly retired = new Set<UdpSocket>();
  private readonly inflight = new Map<string, Promise<Buffer | undefined>>();
  private readonly exchanges = new Set<AbortController>();
  private pending = 0;
  private closed = false;
  /** The upstream that answered last (address/port): tried first, so a dead first nameserver costs one timeout, not one per query. */
  private lastGood: string | undefined;
  /** Whether the last exchange got no answer at all: logged on the change only, never per query. */
  private failing = false;
  /** An unexpected failure of forward() was logged at warn (later ones go to debug). */
  private defectLogged = false;

  constructor(opts: ForwarderOptions) {
    this.upstreams = opts.upstreams;
    this.cache = opts.cache;
    this.timer = opts.timer ?? realTimer;
    this.tryTimeoutMs = opts.tryTimeoutMs ?? DEFAULT_TRY_TIMEOUT_MS;
    this.overallTimeoutMs = opts.overallTimeoutMs ?? DEFAULT_OVERALL_TIMEOUT_MS;
    this.maxPending = Math.min(opts.maxPending ?? DEFAULT_MAX_PENDING, MAX_PENDING_LIMIT);
    this.rotateAfter = opts.rotateAfter ?? DEFAULT_ROTATE_AFTER;
  }

  /** Open UDP sockets to upstreams (current and rotated out). */
  get udpSockets(): number {
    return this.sockets.size + this.retired.size;
  }

  /** Client queries waiting on an upstream now. */
  get pendingQueries(): number {
    return this.pending;
  }

  async forward(msg: Buffer, query: Query, transport: Transport): Promise<Buffer> {
    try {
      const key = cacheKey(query);
      const cached = this.cache?.get(key);
      if (cached) return personalize(cached, msg, query);
      if (this.closed || this.pending >= this.maxPending) return servfail(msg, query);
      this.pending++;
      try {
        // Replies come whole whatever the client's UDP size (TC is retried over TCP); the resolver fits them.
        const flightKey = `${transport}/${key}`;
        let flight = this.inflight.get(flightKey);
        if (!flight) {
          const started = this.exchange(msg, query, transport, key);
          flight = started;
          this.inflight.set(flightKey, started);
          started.finally(() => this.inflight.get(flightKey) === started && this.inflight.delete(flightKey)).catch(() => undefined);
        }
        const reply = await flight;
        return reply ? personalize(Buffer.from(reply), msg, query) : servfail(msg, query);
      } finally {
        this.pending--;
      }
    } catch (err) {
      // A defect, not an upstream's failure: it would repeat for every query, so it is logged at warn once.
      logger.log(this.defectLogged ? 'debug' : 'warn', 'forwarding failed', { error: describeBriefly(err) });
      this.defectLogged = true;
      return servfail(msg, query);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const a of this.exchanges) a.abort();
    for (const s of [...this.sockets.values(), ...this.retired]) this.dropSocket(s);
  }

  /** Tries the upstreams in order, round after round, until one answers or the overall bound passes. */
  private async exchange(msg: Buffer, query: Query, transport: Transport, key: string): Promise<Buffer | undefined> {
    const list = this.upstreams.current();
    if (list.length === 0) return undefined;
    const abort = new AbortController();
    this.exchanges.add(abort);
    const cancelOverall = this.timer(() => abort.abort(), this.overallTimeoutMs);
    // A SERVFAIL/REFUSED/NOTIMP from one upstream is passed on only when no other upstream does better.
    let fallback: Buffer | undefined;
    const first = Math.max(0, list.findIndex((u) => upstreamKey(u) === this.lastGood));
    try {
      for (let i = 0; i < list.length * ROUNDS && !abort.signal.aborted; i++) {
        const upstream = list[(first + i) % list.length];
        const reply = await this.attempt(upstream, msg, query, transport, abort.signal);
        if (!reply) continue;
        const walked = walkMessage(reply);
        if (!walked) {
          logger.debug('malformed upstream reply ignored', { upstream: upstream.address, port: upstream.port });
          continue;
        }
        if (walked.rcode === RCODE.SERVFAIL || walked.rcode === RCODE.REFUSED || walked.rcode === RCODE.NOTIMP) {
          fallback = reply;
          continue;
        }
        this.cache?.put(key, reply, walked);
        this.lastGood = upstreamKey(upstream);
        if (this.failing) logger.info('upstreams answer again', { upstream: upstream.address, port: upstream.port });
        this.failing = false;
        return reply;
      }
      if (!fallback && !this.failing && !this.closed) {
        logger.warn('no upstream answered; forwarded queries get SERVFAIL', { upstreams: list.map(upstreamKey), overallTimeoutMs: this.overallTimeoutMs });
      }
      this.failing = !fallback;
      return fallback;
    } finally {
      cancelOverall();
      this.exchanges.delete(abort);
    }
  }

  /** One try of one upstream: UDP (then TCP when the reply is truncated) or TCP for TCP clients. */
  private async attempt(upstream: DnsUpstream, msg: Buffer, query: Query, transport: Transport, signal: AbortSignal): Promise<Buffer | undefined> {
    if (transport === 'tcp') return this.tcpTry(upstream, msg, query, signal);
    const reply = await this.udpTry(upstream, msg, query, signal);
    if (!reply || (reply.readUInt16BE(2) & F_TC) === 0) return reply;
    // The truncated reply still answers a UDP client (it retries over TCP itself) if TCP fails here.
    return (await this.tcpTry(upstream, msg, query, signal)) ?? reply;
  }

  private udpTry(upstream: DnsUpstream, msg: Buffer, query: Query, signal: AbortSignal): Promise<Buffer | undefined> {
    const s = this.socket(net.isIPv6(upstream.address) ? 6 : 4);
    let id: number;
    do id = randomInt(0x10000);
    while (s.pending.has(id));
    const out = Buffer.from(msg);
    out.writeUInt16BE(id, 0);
    s.sent++;
    return new Promise<Buffer | undefined>((resolve) => {
      const done = (reply: Buffer | undefined) => {
        if (s.pending.get(id) !== entry) return;
        s.pending.delete(id);
        if (s.pending.size === 0 && this.retired.has(s)) this.dropSocket(s);
        cancel();
        signal.removeEventListener('abort', onAbort);
        resolve(reply);
      };
      const onAbort = () => done(undefined);
      const entry: PendingTry = { address: canonicalAddress(upstream.address), port: upstream.port, msg, questionEnd: query.questionEnd, done };
      s.pending.set(id, entry);
      const cancel = this.timer(() => done(undefined), this.tryTimeoutMs);
      signal.addEventListener('abort', onAbort);
      const failed = (err: Error) => {
        logger.debug('upstream send failed', { upstream: upstream.address, port: upstream.port, error: err.message });
        done(undefined);
      };
      try {
        s.socket.send(out, upstream.port, upstream.address, (err) => err && failed(err));
      } catch (err) {
        // A bad scope id or a closed socket throws at once instead of calling back.
        failed(err instanceof Error ? err : new Error('send failed'));
      }
    });
  }

  private tcpTry(upstream: DnsUpstream, msg: Buffer, query: Query, signal: AbortSignal): Promise<Buffer | undefined> {
    const id = randomInt(0x10000);
    const frame = Buffer.alloc(2 + msg.length);
    frame.writeUInt16BE(msg.length, 0);
    msg.copy(frame, 2);
    frame.writeUInt16BE(id, 2);
    return new Promise<Buffer | undefined>((resolve) => {
      let settled = false;
      let received = Buffer.alloc(0);
      const sock = net.connect({ host: upstream.address, port: upstream.port });
      const done = (reply: Buffer | undefined) => {
        if (settled) return;
        settled = true;
        cancel();
        signal.removeEventListener('abort', onAbort);
        sock.destroy();
        resolve(reply);
      };
      const onAbort = () => done(undefined);
      const cancel = this.timer(() => done(undefined), this.tryTimeoutMs);
      signal.addEventListener('abort', onAbort);
      sock.on('connect', () => sock.write(frame));
      sock.on('data', (chunk: Buffer) => {
        received = Buffer.concat([received, chunk]);
        if (received.length < 2 || received.length < 2 + received.readUInt16BE(0)) return;
        const reply = received.subarray(2, 2 + received.readUInt16BE(0));
        done(reply.length >= 2 && reply.readUInt16BE(0) === id && answersQuestion(reply, msg, query.questionEnd) ? Buffer.from(reply) : undefined);
      });
      sock.on('error', () => done(undefined));
      sock.on('close', () => done(undefined));
    });
  }

  private socket(family: 4 | 6): UdpSocket {
    const existing = this.sockets.get(family);
    if (existing && existing.sent < this.rotateAfter) return existing;
    if (existing) {
      this.sockets.delete(family);
      if (existing.pending.size === 0) this.dropSocket(existing);
      else this.retired.add(existing);
    }
    const s: UdpSocket = { socket: dgram.createSocket(family === 6 ? 'udp6' : 'udp4'), pending: new Map(), sent: 0 };
    s.socket.on('message', (reply, rinfo) => {
      if (reply.length < 12) return;
      const p = s.pending.get(reply.readUInt16BE(0));
      // Anti-spoofing: the upstream's address and port, the ID and the question must all match.
      if (!p || canonicalAddress(rinfo.address) !== p.address || rinfo.port !== p.port || !answersQuestion(reply, p.msg, p.questionEnd)) return;
      p.done(reply);
    });
    s.socket.on('error', (err) => {
      logger.warn('upstream socket failed; a new one is opened for the next query', { family, error: err.message });
      this.dropSocket(s);
    });
    this.sockets.set(family, s);
    return s;
  }

  private dropSocket(s: UdpSocket): void {
    for (const [family, cur] of this.sockets) if (cur === s) this.sockets.delete(family);
    this.retired.delete(s);
    for (const p of [...s.pending.values()]) p.done(undefined);
    try {
      s.socket.close();
    } catch {
      // already closed
    }
  }
}

/**
 * A reply (a copy the caller owns) made the client's: its ID and its question's letter case. Fitting it to the
 * client's UDP size is the resolver's, as for tsnet's own answers.
 */
function personalize(reply: Buffer, msg: Buffer, query: Query): Buffer {
  reply.writeUInt16BE(query.id, 0);
  if (answersQuestion(reply, msg, query.questionEnd)) msg.copy(reply, 12, 12, query.questionEnd);
  return reply;
}

function servfail(msg: Buffer, query: Query): Buffer {
  return rcodeResponse(msg, query, RCODE.SERVFAIL, true);
}

function upstreamKey(u: DnsUpstream): string {
  return `${u.address}/${u.port}`;
}
