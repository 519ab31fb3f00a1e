import dgram from 'node:dgram';
import net from 'node:net';
import type { QueryContext, QueryHandler } from '../../src/dns/contract';
import { createResolver } from '../../src/dns/resolver';
import { type DnsListener, openListener } from '../../src/dns/server';
import type { StartTimer } from '../../src/dns/timer';
import { buildZone } from '../../src/dns/zone';
import { TsnetError } from '../../src/errors';
import { canonicalAddress } from '../../src/netaddr';
import { containers, decode, NET_FRONT, networks, query, udpAsk } from './dns-fixtures';

/** A TCP client collecting framed replies. */
class TcpClient {
  readonly replies: Buffer[] = [];
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed: Promise<void>;
  private constructor(readonly sock: net.Socket) {
    this.closed = new Promise((r) => sock.on('close', () => r()));
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 2 && this.buf.length >= this.buf.readUInt16BE(0) + 2) {
        const len = this.buf.readUInt16BE(0);
        this.replies.push(this.buf.subarray(2, 2 + len));
        this.buf = this.buf.subarray(2 + len);
      }
      for (const w of this.waiters.splice(0)) w();
    });
    sock.on('error', () => undefined);
  }
  static connect(port: number): Promise<TcpClient> {
    return new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new TcpClient(s)));
    });
  }
  send(...msgs: Buffer[]): void {
    this.sock.write(Buffer.concat(msgs.map((m) => Buffer.concat([Buffer.from([m.length >> 8, m.length & 255]), m]))));
  }
  async waitFor(n: number): Promise<Buffer[]> {
    while (this.replies.length < n) await new Promise<void>((r) => this.waiters.push(r));
    return this.replies;
  }
}

const spec = { address: '127.0.0.1', port: 0, networkId: NET_FRONT, noForward: true };

function resolverHandler(): QueryHandler {
  const r = createResolver();
  const crowd = Array.from({ length: 100 }, (_, i) => ({
    id: `${i}`.padStart(64, 'c'),
    name: `c${i}`,
    hostname: `h${i}`,
    networks: [{ networkId: NET_FRONT, networkName: 'front', ipv4: `172.30.0.${i + 10}`, aliases: ['crowd'] }],
  }));
  r.setZone(buildZone({ zone: 'tsnet', ttl: 5, networks, containers: [...containers, ...crowd], serial: 1 }));
  return r.handle;
}

const open: DnsListener[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((l) => l.close()));
});
async function listen(handler: QueryHandler, opts: Parameters<typeof openListener>[2] = {}): Promise<DnsListener> {
  const l = await openListener(spec, handler, opts);
  open.push(l);
  return l;
}

test('UDP and TCP on the same port answer; the context names the listener, its network and the client', async () => {
  const seen: QueryContext[] = [];
  const handler = resolverHandler();
  const l = await listen((m, c) => {
    seen.push(c);
    return handler(m, c);
  });
  const u = decode(await udpAsk(l.port, query('web.front.tsnet', 'A')));
  expect(u.answers!.map((a) => a.name)).toEqual(['web.front.tsnet']);
  const t = await TcpClient.connect(l.port);
  t.send(query('web.front.tsnet', 'AAAA'));
  const [r] = await t.waitFor(1);
  expect(decode(r).answers!.map((a) => a.type)).toEqual(['AAAA']);
  t.sock.destroy();
  expect(seen).toEqual([
    { transport: 'udp', source: '127.0.0.1', networkId: NET_FRONT, localAddress: '127.0.0.1', mayForward: false },
    { transport: 'tcp', source: '127.0.0.1', networkId: NET_FRONT, localAddress: '127.0.0.1', mayForward: false },
  ]);
});

test('an alias with 100 containers: TC over UDP (OPT kept), the full answer over TCP', async () => {
  const l = await listen(resolverHandler());
  const u = decode(await udpAsk(l.port, query('crowd', 'A', { udpSize: 1232 })));
  expect(u).toMatchObject({ flag_tc: true, answers: [], additionals: [expect.objectContaining({ type: 'OPT' })] });
  const t = await TcpClient.connect(l.port);
  t.send(query('crowd', 'A', { udpSize: 1232 }));
  const [r] = await t.waitFor(1);
  const full = decode(r);
  expect(full.flag_tc).toBe(false);
  expect(full.answers).toHaveLength(100);
  t.sock.destroy();
});

test('pipelined TCP: several queries in one write, answers as each is ready (out of order allowed)', async () => {
  const gates: Array<() => void> = [];
  const handler = resolverHandler();
  const l = await listen((m, c) => {
    const id = m.readUInt16BE(0);
    if (id !== 1) return handler(m, c);
    // the first query is slow: the later ones must not wait for it
    return new Promise((r) => gates.push(() => r(handler(m, c))));
  });
  const t = await TcpClient.connect(l.port);
  t.send(query('web', 'A', { id: 1 }), query('api', 'A', { id: 2 }), query('db', 'A', { id: 3 }));
  await t.waitFor(2);
  expect(t.replies.map((r) => r.readUInt16BE(0))).toEqual([2, 3]);
  gates[0]();
  await t.waitFor(3);
  expect(t.replies.map((r) => r.readUInt16BE(0))).toEqual([2, 3, 1]);
  t.sock.destroy();
});

test('a client that does not read: the listener stops taking its queries, and serves them all once it reads', async () => {
  const handler = resolverHandler();
  let handled = 0;
  const l = await listen(
    (m, c) => {
      handled++;
      return handler(m, c);
    },
    { maxQueued: 64 * 1024 },
  );
  const t = await TcpClient.connect(l.port);
  t.sock.pause();
  const N = 5000; // ~1.7 kB per reply: ~8.5 MB, far beyond socket buffers and maxQueued
  t.send(...Array.from({ length: N }, (_, i) => query('crowd', 'A', { id: i })));
  // wait until the listener has stopped taking queries (the count holds still)
  let last = -1;
  while (handled !== last) {
    last = handled;
    await new Promise((r) => setTimeout(r, 100));
  }
  expect(handled).toBeLessThan(N);
  t.sock.resume();
  const replies = await t.waitFor(N);
  expect(new Set(replies.map((r) => r.readUInt16BE(0))).size).toBe(N);
  expect(handled).toBe(N);
  t.sock.destroy();
}, 30_000);

test('a client that does not read: answers that arrive later (forwarded) never pile up behind a full queue, the connection ends', async () => {
  const held: Array<() => void> = [];
  const big = Buffer.alloc(60_000);
  let handled = 0;
  // Queries with ID < 10 are answered later (as forwarded ones are), the others at once.
  const l = await listen(
    (m) => {
      handled++;
      return m.readUInt16BE(0) < 10 ? new Promise<Buffer>((resolve) => held.push(() => resolve(big))) : big;
    },
    { maxQueued: 64 * 1024 },
  );
  const t = await TcpClient.connect(l.port);
  t.sock.pause();
  t.send(...Array.from({ length: 3000 }, (_, i) => query('ext.example', 'A', { id: i })));
  // wait until the listener has stopped taking queries: the socket buffers and its queue are full
  for (let last = -1; handled !== last; ) {
    last = handled;
    await new Promise((r) => setTimeout(r, 100));
  }
  expect(handled).toBeLessThan(3000);
  expect(held).toHaveLength(10);
  let closed = false;
  t.closed.then(() => (closed = true)).catch(() => undefined);
  const isClosed = () => closed;
  for (const r of held) r();
  await new Promise((r) => setTimeout(r, 100));
  // Reading again shows what the listener did: ended the connection (what it had queued arrives, then the end),
  // or (the defect) kept all ten 60 kB answers queued and serves every query.
  t.sock.resume();
  for (let i = 0; i < 200 && !isClosed() && t.replies.length < 3000; i++) await new Promise((r) => setTimeout(r, 20));
  expect(isClosed()).toBe(true);
  expect(t.replies.length).toBeLessThan(3000);
}, 30_000);

test('a query split across TCP segments is reassembled', async () => {
  const l = await listen(resolverHandler());
  const t = await TcpClient.connect(l.port);
  const m = query('web.front.tsnet', 'A');
  const framed = Buffer.concat([Buffer.from([0, m.length]), m]);
  t.sock.write(framed.subarray(0, 1));
  await new Promise((r) => setImmediate(r));
  t.sock.write(framed.subarray(1, 9));
  await new Promise((r) => setImmediate(r));
  t.sock.write(framed.subarray(9));
  const [r] = await t.waitFor(1);
  expect(decode(r).answers).toHaveLength(1);
  t.sock.destroy();
});

test('idle TCP connections are closed after the idle timeout (injected timer); activity re-arms it', async () => {
  const timers: Array<{ fn: () => void; ms: number; live: boolean }> = [];
  const startTimer: StartTimer = (fn, ms) => {
    const t = { fn, ms, live: true };
    timers.push(t);
    return () => (t.live = false);
  };
  const l = await listen(resolverHandler(), { idleTimeoutMs: 1234, startTimer });
  const t = await TcpClient.connect(l.port);
  t.send(query('web', 'A'));
  await t.waitFor(1);
  const live = timers.filter((x) => x.live);
  expect(live.map((x) => x.ms)).toEqual([1234]);
  expect(timers.length).toBeGreaterThan(1); // re-armed on data and on the reply
  live[0].fn();
  await t.closed;
});

test('bytes that do not complete a query do not re-arm the idle timer (a trickling client cannot hold a connection slot)', async () => {
  const timers: Array<{ fn: () => void; live: boolean }> = [];
  const startTimer: StartTimer = (fn) => {
    const t = { fn, live: true };
    timers.push(t);
    return () => (t.live = false);
  };
  const l = await listen(resolverHandler(), { idleTimeoutMs: 1234, startTimer });
  const t = await TcpClient.connect(l.port);
  const m = query('web', 'A');
  const framed = Buffer.concat([Buffer.from([0, m.length]), m]);
  t.sock.write(Buffer.concat([framed, framed.subarray(0, 5)]));
  await t.waitFor(1);
  const armed = timers.filter((x) => x.live);
  expect(armed).toHaveLength(1);
  const started = timers.length;
  for (let i = 5; i < 9; i++) {
    t.sock.write(framed.subarray(i, i + 1));
    // Time for the listener to read the byte (a delay that is too short could only let this test pass wrongly).
    await new Promise((r) => setTimeout(r, 20));
  }
  expect(timers.length).toBe(started);
  expect(armed[0].live).toBe(true);
  armed[0].fn();
  await t.closed;
});

test('a malformed TCP message (a response, a zero or oversized frame) closes that connection only', async () => {
  const l = await listen(resolverHandler(), { maxMessage: 600 });
  const resp = query('web', 'A');
  resp[2] |= 0x80;
  for (const bad of [
    (c: TcpClient) => c.send(resp),
    (c: TcpClient) => c.sock.write(Buffer.from([0, 0])),
    (c: TcpClient) => c.sock.write(Buffer.from([0x02, 0x59, 0, 0])),
  ]) {
    const c = await TcpClient.connect(l.port);
    bad(c);
    await c.closed;
    expect(c.replies).toEqual([]);
  }
  // FORMERR is an answer: the connection stays
  const c = await TcpClient.connect(l.port);
  const fe = query('web', 'A', { id: 9 });
  fe.writeUInt16BE(0, 4);
  c.send(fe, query('web', 'A', { id: 10 }));
  const rs = await c.waitFor(2);
  expect(rs.map((r) => [r.readUInt16BE(0), decode(r).rcode])).toEqual([
    [9, 'FORMERR'],
    [10, 'NOERROR'],
  ]);
  c.sock.destroy();
  expect(decode(await udpAsk(l.port, query('web', 'A'))).rcode).toBe('NOERROR');
});

test('a handler that throws or rejects costs that query only: no reply, the listener keeps answering', async () => {
  const handler = resolverHandler();
  const l = await listen((m, c) => {
    const id = m.readUInt16BE(0);
    if (id === 1) throw new Error('boom');
    if (id === 2) return Promise.reject(new Error('late boom'));
    return handler(m, c);
  });
  const s = dgram.createSocket('udp4');
  s.send(query('web', 'A', { id: 1 }), l.port, '127.0.0.1');
  s.send(query('web', 'A', { id: 2 }), l.port, '127.0.0.1');
  s.close();
  expect(decode(await udpAsk(l.port, query('web', 'A', { id: 3 }))).id).toBe(3);
});

test('an answer that arrives after close() (a slow forward) is dropped without an unhandled error', async () => {
  let release: (b: Buffer) => void = () => {};
  const late = new Promise<Buffer>((r) => (release = r));
  let asked!: () => void;
  const arrived = new Promise<void>((r) => (asked = r));
  const l = await openListener(spec, () => {
    asked();
    return late;
  });
  const s = dgram.createSocket('udp4');
  s.send(query('example.com', 'A'), l.port, '127.0.0.1');
  await arrived;
  await l.close();
  const rejections: unknown[] = [];
  const onRejection = (e: unknown) => rejections.push(e);
  process.on('unhandledRejection', onRejection);
  release(query('example.com', 'A'));
  // unhandled rejections are reported after the microtask queue drains
  await new Promise((r) => setImmediate(r));
  process.off('unhandledRejection', onRejection);
  s.close();
  expect(rejections).toEqual([]);
});

test('a connection cap: connections beyond it are refused, the ones inside it served', async () => {
  const l = await listen(resolverHandler(), { maxConnections: 1 });
  const a = await TcpClient.connect(l.port);
  const b = await TcpClient.connect(l.port);
  await b.closed;
  a.send(query('web', 'A'));
  expect(await a.waitFor(1)).toHaveLength(1);
  a.sock.destroy();
});

test('IPv6 listener; a port taken for UDP or TCP rejects with TSN_DNS and leaves nothing bound', async () => {
  const v6 = await openListener({ ...spec, address: '::1' }, resolverHandler());
  open.push(v6);
  expect(decode(await udpAsk(v6.port, query('web', 'A'), '::1')).rcode).toBe('NOERROR');

  const l = await listen(resolverHandler());
  const err = await openListener({ ...spec, port: l.port }, resolverHandler()).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(TsnetError);
  expect(err).toMatchObject({ code: 'TSN_DNS', cause: expect.objectContaining({ code: 'EADDRINUSE' }) });

  // TCP taken, UDP free: the UDP socket bound first is closed again
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  const port = (blocker.address() as net.AddressInfo).port;
  const err2 = await openListener({ ...spec, port }, resolverHandler()).catch((e: unknown) => e);
  expect(err2).toMatchObject({ code: 'TSN_DNS', message: expect.stringContaining('TCP') });
  const probe = dgram.createSocket('udp4');
  await new Promise<void>((r) => probe.bind(port, '127.0.0.1', r));
  probe.close();
  await new Promise<void>((r) => blocker.close(() => r()));
});

test('close() releases the port and ends open connections', async () => {
  const l = await openListener(spec, resolverHandler());
  const c = await TcpClient.connect(l.port);
  await l.close();
  await c.closed;
  const again = await openListener({ ...spec, port: l.port }, resolverHandler());
  await again.close();
});

test('source addresses: IPv4-mapped IPv6 as IPv4, zone ids dropped', () => {
  expect(canonicalAddress('::ffff:172.30.0.9')).toBe('172.30.0.9');
  expect(canonicalAddress('fe80::1%eth0')).toBe('fe80::1');
  expect(canonicalAddress('FD00::0:5')).toBe('fd00::5');
});
