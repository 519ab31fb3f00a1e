/**
 * DNS clients for tests: node's resolver for the plain questions (A, AAAA, PTR, SOA, NS), a raw UDP/TCP client for
 * what a resolver hides (EDNS, TC, rcodes, pipelining, garbage), and busybox nslookup inside a container. Replies are
 * decoded with dns-packet, a codec independent of tsnet's own wire code.
 */
import dgram from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import net from 'node:net';
import dnsPacket, { type DecodedPacket, type OptAnswer, type RecordType } from 'dns-packet';
import type { Docker } from './dockerd';

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

/** How long one query waits for its answer unless told otherwise. */
const QUERY_TIMEOUT_MS = 2_000;

/**
 * node's resolver (c-ares) asking only `server:port`, one try, no search list: its errors name the rcode
 * (`ENOTFOUND` NXDOMAIN, `ENODATA` NODATA, `EREFUSED`, `ESERVFAIL`, `ETIMEOUT`).
 */
export function resolverAt(server: string, port = 53, timeoutMs = QUERY_TIMEOUT_MS): Resolver {
  const r = new Resolver({ timeout: timeoutMs, tries: 1 });
  r.setServers([net.isIPv6(server) ? `[${server}]:${port}` : `${server}:${port}`]);
  return r;
}

/** The answer of a resolver call, or the error code it failed with (`ENOTFOUND`, `ENODATA`, ...). */
export async function outcome<T>(call: Promise<T>): Promise<T | string> {
  try {
    return await call;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code !== 'string') throw e;
    return code;
  }
}

export interface QueryOptions {
  id?: number;
  /** EDNS(0) UDP payload size to offer in an OPT record; none when undefined. */
  edns?: number;
  /** Recursion desired (default true, as stub resolvers send). */
  rd?: boolean;
  /** How long to wait for the answer (default 2 s). */
  timeoutMs?: number;
}

/** A query message on the wire. */
export function encodeQuery(name: string, type: RecordType, opts: QueryOptions = {}): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: opts.id ?? Math.floor(Math.random() * 0x10000),
    flags: opts.rd === false ? 0 : dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
    additionals:
      opts.edns === undefined
        ? []
        : [{ type: 'OPT', name: '.', udpPayloadSize: opts.edns, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }],
  });
}

/** A decoded reply with what tests look at. */
export interface Reply {
  packet: DecodedPacket;
  id: number;
  rcode: number;
  tc: boolean;
  aa: boolean;
  /** Size on the wire. */
  size: number;
  /** The answer section's data as text (addresses, PTR targets, ...), in wire order. */
  answers: string[];
  /** The reply's OPT record, if any. */
  opt: OptAnswer | undefined;
}

export function decodeReply(buf: Buffer): Reply {
  const packet = dnsPacket.decode(buf);
  const flags = buf.readUInt16BE(2);
  const answers = (packet.answers ?? []).map((a) => ('data' in a && typeof a.data === 'string' ? a.data : JSON.stringify(a)));
  const opt = (packet.additionals ?? []).find((a): a is OptAnswer => a.type === 'OPT');
  return { packet, id: buf.readUInt16BE(0), rcode: flags & 0xf, tc: packet.flag_tc, aa: packet.flag_aa, size: buf.length, answers, opt };
}

/** Sends `msg` over UDP and resolves with the first datagram back whose ID matches; rejects after `timeoutMs`. */
export function udpExchange(server: string, port: number, msg: Buffer, timeoutMs = QUERY_TIMEOUT_MS): Promise<Buffer> {
  const id = msg.readUInt16BE(0);
  const sock = dgram.createSocket(net.isIPv6(server) ? 'udp6' : 'udp4');
  return new Promise<Buffer>((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`no UDP answer from ${server}:${port} in ${timeoutMs} ms`)), timeoutMs);
    const finish = (err: Error | undefined, reply?: Buffer): void => {
      clearTimeout(timer);
      sock.close();
      if (reply) resolve(reply);
      else reject(err ?? new Error('no reply'));
    };
    sock.on('error', (e) => finish(e));
    sock.on('message', (reply) => {
      if (reply.length >= 2 && reply.readUInt16BE(0) === id) finish(undefined, reply);
    });
    sock.send(msg, port, server, (e) => {
      if (e) finish(e);
    });
  });
}

/**
 * Writes every message on one TCP connection at once (pipelined, each with its 2-byte length) and resolves with as
 * many replies, in the order they came; rejects on a timeout or if the server closes first.
 */
export function tcpExchange(server: string, port: number, msgs: readonly Buffer[], timeoutMs = QUERY_TIMEOUT_MS): Promise<Buffer[]> {
  return new Promise<Buffer[]>((resolve, reject) => {
    const sock = net.connect({ host: server, port });
    const replies: Buffer[] = [];
    let pending = Buffer.alloc(0);
    const timer = setTimeout(
      () => finish(new Error(`${replies.length} of ${msgs.length} TCP answers from ${server}:${port} in ${timeoutMs} ms`)),
      timeoutMs,
    );
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(replies);
    };
    sock.on('error', (e) => finish(e));
    sock.on('close', () =>
      finish(replies.length < msgs.length ? new Error(`server closed after ${replies.length} of ${msgs.length} TCP answers`) : undefined),
    );
    sock.on('connect', () => {
      sock.write(Buffer.concat(msgs.map((m) => Buffer.concat([Buffer.from([m.length >> 8, m.length & 0xff]), m]))));
    });
    sock.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        const len = pending.readUInt16BE(0);
        replies.push(pending.subarray(2, 2 + len));
        pending = pending.subarray(2 + len);
      }
      if (replies.length >= msgs.length) finish();
    });
  });
}

/** One question over UDP, decoded. */
export async function udpQuery(server: string, port: number, name: string, type: RecordType, opts: QueryOptions = {}): Promise<Reply> {
  return decodeReply(await udpExchange(server, port, encodeQuery(name, type, opts), opts.timeoutMs));
}

/** One question over TCP, decoded. */
export async function tcpQuery(server: string, port: number, name: string, type: RecordType, opts: QueryOptions = {}): Promise<Reply> {
  const [reply] = await tcpExchange(server, port, [encodeQuery(name, type, opts)], opts.timeoutMs);
  return decodeReply(reply);
}

/** Fires datagrams at `server:port` without waiting for anything (garbage for a fuzz burst). */
export async function udpBlast(server: string, port: number, packets: readonly Buffer[]): Promise<void> {
  const sock = dgram.createSocket(net.isIPv6(server) ? 'udp6' : 'udp4');
  try {
    for (const p of packets) {
      await new Promise<void>((resolve, reject) => {
        sock.send(p, port, server, (e) => (e ? reject(e) : resolve()));
      });
    }
  } finally {
    sock.close();
  }
}

/** What busybox nslookup printed: the addresses answered, or the failure it named (`NXDOMAIN`, `SERVFAIL`, ...). */
export interface NslookupResult {
  addresses: string[];
  error?: string;
  output: string;
}

/**
 * `nslookup [-type=T] NAME SERVER` (busybox) inside a running container. With no `server`, the container's own
 * resolv.conf decides (Docker's embedded DNS on user-defined networks, which forwards what it does not know to `--dns`).
 */
export async function nslookupIn(docker: Docker, container: string, name: string, server?: string, type?: string): Promise<NslookupResult> {
  const args = ['exec', container, 'nslookup', ...(type ? [`-type=${type}`] : []), name, ...(server ? [server] : [])];
  const r = await docker.dockerTry(args, { timeoutMs: 20_000 });
  const output = `${r.stdout}${r.stderr}`;
  // The answers follow the first blank line; the lines before are the server's own `Address:`.
  const answers = output.slice(output.indexOf('\n\n') + 2);
  const addresses = [...answers.matchAll(/^Address:\s+(\S+)$/gm)].map((m) => m[1]);
  const error = /can't find [^:]*: (\w+)/.exec(output)?.[1];
  return { addresses, output, ...(error ? { error } : {}) };
}
