import dgram from 'node:dgram';
import net from 'node:net';
import * as packet from 'dns-packet';
import type { Query } from '../../src/dns/contract';
import { isParseFailure, parseQuery } from '../../src/dns/wire';
import { query } from './dns-fixtures';

/** Fixtures of the forwarder's tests: queries as the server hands them over, and upstream replies encoded by dns-packet. */

/** A query's wire form (dns-packet) and its parsed form (src/dns/wire.ts), as the server hands them over. */
export function makeQuery(name: string, type: packet.RecordType = 'A', opts: { id?: number; edns?: { udpSize: number; dnssecOk?: boolean } } = {}): { msg: Buffer; query: Query } {
  const msg = query(name, type, { id: opts.id ?? 0x1234, udpSize: opts.edns?.udpSize, dnssecOk: opts.edns?.dnssecOk });
  const parsed = parseQuery(msg);
  if (isParseFailure(parsed)) throw new Error(`fixture query for ${name} does not parse: ${parsed.error}`);
  return { msg, query: parsed };
}

export interface ReplySpec {
  answers?: packet.Answer[];
  authorities?: packet.Answer[];
  additionals?: packet.Answer[];
  flags?: number;
}

/** An upstream's reply to `msg` (same ID and question unless the spec says otherwise). */
export function makeReply(msg: Buffer, spec: ReplySpec = {}): Buffer {
  const q = packet.decode(msg);
  return packet.encode({
    type: 'response',
    id: q.id,
    flags: (spec.flags ?? 0) | packet.RECURSION_DESIRED | packet.RECURSION_AVAILABLE,
    questions: q.questions,
    answers: spec.answers ?? [],
    authorities: spec.authorities ?? [],
    additionals: spec.additionals ?? [],
  });
}

export const RCODE_FLAG = { NXDOMAIN: 3, SERVFAIL: 2, REFUSED: 5 } as const;

export function soa(zone: string, ttl: number, minimum: number): packet.Answer {
  return {
    type: 'SOA',
    name: zone,
    ttl,
    data: { mname: `ns.${zone}`, rname: `hostmaster.${zone}`, serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum },
  };
}

export function a(name: string, ttl: number, address: string): packet.Answer {
  return { type: 'A', name, ttl, data: address };
}

/** The TTLs of a message's records, section by section, as an independent decoder reads them. */
export function ttlsOf(msg: Buffer): { answers: number[]; authorities: number[] } {
  const d = packet.decode(msg);
  const ttl = (r: packet.Answer) => ('ttl' in r && r.ttl !== undefined ? r.ttl : -1);
  return { answers: (d.answers ?? []).map(ttl), authorities: (d.authorities ?? []).map(ttl) };
}

export function rcodeOf(msg: Buffer): number {
  return msg.readUInt16BE(2) & 0xf;
}

export function opt(udpPayloadSize: number, flags = 0): packet.Answer {
  return { type: 'OPT', name: '.', udpPayloadSize, extendedRcode: 0, ednsVersion: 0, flags, flag_do: (flags & packet.DNSSEC_OK) !== 0, options: [] };
}

/** Timers the test fires by advancing a virtual clock (no test waits on the real one). */
export class FakeTimers {
  now = 0;
  private timers: { due: number; fn: () => void; live: boolean }[] = [];
  start = (fn: () => void, ms: number): (() => void) => {
    const t = { due: this.now + ms, fn, live: true };
    this.timers.push(t);
    return () => (t.live = false);
  };
  /** Moves the clock on by `ms`, firing every timer that falls due, in order. */
  advance(ms: number): void {
    const until = this.now + ms;
    for (;;) {
      const next = this.timers.filter((t) => t.live && t.due <= until).sort((x, y) => x.due - y.due).at(0);
      if (!next) break;
      this.now = next.due;
      next.live = false;
      next.fn();
    }
    this.now = until;
    this.timers = this.timers.filter((t) => t.live);
  }
  get live(): number {
    return this.timers.filter((t) => t.live).length;
  }
}

export type UpstreamHandler = (msg: Buffer, via: 'udp' | 'tcp', from: dgram.RemoteInfo | undefined) => Buffer | undefined | Promise<Buffer | undefined>;

/** A resolver on 127.0.0.1 serving UDP and TCP on one ephemeral port, answering through `handler` (undefined: silence). */
export class FakeUpstream {
  /** Every query as it arrived; `port` is the UDP source port. */
  received: { via: 'udp' | 'tcp'; msg: Buffer; port?: number }[] = [];
  handler: UpstreamHandler = () => undefined;
  private conns = new Set<net.Socket>();

  private constructor(
    readonly udp: dgram.Socket,
    readonly tcp: net.Server,
    readonly port: number,
    readonly host: string,
  ) {
    udp.on('message', (msg, rinfo) => {
      this.received.push({ via: 'udp', msg, port: rinfo.port });
      Promise.resolve(this.handler(msg, 'udp', rinfo))
        .then((r) => r && udp.send(r, rinfo.port, rinfo.address))
        .catch(() => undefined);
    });
    tcp.on('connection', (c) => {
      this.conns.add(c);
      c.on('close', () => this.conns.delete(c));
      c.on('error', () => undefined);
      let buf = Buffer.alloc(0);
      c.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
          buf = buf.subarray(2 + msg.length);
          this.received.push({ via: 'tcp', msg });
          Promise.resolve(this.handler(msg, 'tcp', undefined))
            .then((r) => {
              if (!r) return;
              const len = Buffer.alloc(2);
              len.writeUInt16BE(r.length);
              c.write(Buffer.concat([len, r]));
            })
            .catch(() => undefined);
        }
      });
    });
  }

  static async start(host = '127.0.0.1'): Promise<FakeUpstream> {
    for (;;) {
      const udp = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(0, host, resolve);
      });
      const port = udp.address().port;
      const tcp = net.createServer();
      const ok = await new Promise<boolean>((r) => {
        tcp.once('error', () => r(false));
        tcp.listen(port, host, () => r(true));
      });
      if (ok) return new FakeUpstream(udp, tcp, port, host);
      udp.close();
    }
  }

  get address(): { address: string; port: number } {
    return { address: this.host, port: this.port };
  }

  count(via: 'udp' | 'tcp'): number {
    return this.received.filter((r) => r.via === via).length;
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.destroy();
    await new Promise<void>((r) => this.udp.close(() => r()));
    await new Promise<void>((r) => this.tcp.close(() => r()));
  }
}

/** Waits (event loop turns, no clock assertion) until `cond` holds. */
export async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setImmediate(r));
}
