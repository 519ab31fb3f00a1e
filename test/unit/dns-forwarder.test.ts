import dgram from 'node:dgram';
import os from 'node:os';
import * as packet from 'dns-packet';
import type { DnsUpstream } from '../../src/config';
import { DnsCache } from '../../src/dns/cache';
import { UpstreamForwarder, type ForwarderOptions } from '../../src/dns/forwarder';
import { log } from '../../src/log';
import { a, FakeTimers, FakeUpstream, makeQuery, makeReply, RCODE_FLAG, rcodeOf, soa, ttlsOf, until } from './dns-forwarder-fixtures';

/** The forwarder against fake upstreams on 127.0.0.1 (UDP and TCP), on fake timers and an injected cache clock. */

let ups: FakeUpstream[] = [];
let fwd: UpstreamForwarder | undefined;
let timers: FakeTimers;

beforeEach(() => (timers = new FakeTimers()));
afterEach(async () => {
  await fwd?.close();
  fwd = undefined;
  await Promise.all(ups.map((u) => u.close()));
  ups = [];
});

async function upstreams(n: number): Promise<FakeUpstream[]> {
  const started = await Promise.all(Array.from({ length: n }, () => FakeUpstream.start()));
  ups.push(...started);
  return started;
}

function forwarder(list: DnsUpstream[], opts: Partial<ForwarderOptions> = {}): UpstreamForwarder {
  fwd = new UpstreamForwarder({ upstreams: { current: () => list }, timer: timers.start, cache: new DnsCache({ now: () => timers.now }), ...opts });
  return fwd;
}

const answerOf = (reply: Buffer) => (packet.decode(reply).answers ?? []).map((r) => ('data' in r ? r.data : undefined));
const idOf = (msg: Buffer) => msg.readUInt16BE(0);

/** An upstream that answers every query with `address` once the test releases it. */
async function holdingUpstream(address: string): Promise<{ up: FakeUpstream; release: () => void }> {
  const [up] = await upstreams(1);
  let release: () => void = () => undefined;
  const held = new Promise<void>((r) => (release = r));
  up.handler = async (m) => {
    await held;
    return makeReply(m, { answers: [a(packet.decode(m).questions![0].name, 60, address)] });
  };
  return { up, release };
}

/** A forward whose settling the test can observe without awaiting it. */
function observe(p: Promise<Buffer>): { reply?: Buffer } {
  const box: { reply?: Buffer } = {};
  p.then((r) => (box.reply = r)).catch(() => undefined);
  return box;
}

test('a forwarded answer carries the client ID; the upstream saw the question under a fresh ID', async () => {
  const [up] = await upstreams(1);
  up.handler = (m) => makeReply(m, { answers: [a('www.example.org', 60, '192.0.2.7')] });
  const f = forwarder([up.address]);
  const ids = new Set<number>();
  for (let i = 0; i < 8; i++) {
    const { msg, query } = makeQuery(`host${i}.example.org`, 'A', { id: 0xbeef });
    const reply = await f.forward(msg, query, 'udp');
    expect(idOf(reply)).toBe(0xbeef);
    expect(answerOf(reply)).toEqual(['192.0.2.7']);
    expect(packet.decode(up.received[i].msg).questions).toEqual(packet.decode(msg).questions);
    ids.add(idOf(up.received[i].msg));
  }
  // Eight random IDs are all 0xbeef with probability 2^-128.
  expect([...ids]).not.toEqual([0xbeef]);
});

test('a cached answer is served with TTLs counted down, then expires and is asked again', async () => {
  const [up] = await upstreams(1);
  up.handler = (m) => makeReply(m, { answers: [a('cached.example.org', 30, '192.0.2.8')] });
  const f = forwarder([up.address]);
  const q = (id: number) => makeQuery('cached.example.org', 'A', { id });
  await f.forward(q(1).msg, q(1).query, 'udp');
  timers.now += 12_000;
  const second = await f.forward(q(2).msg, q(2).query, 'udp');
  expect(idOf(second)).toBe(2);
  expect(ttlsOf(second).answers).toEqual([18]);
  expect(up.received).toHaveLength(1);
  timers.now += 18_000;
  const third = await f.forward(q(3).msg, q(3).query, 'udp');
  expect(ttlsOf(third).answers).toEqual([30]);
  expect(up.received).toHaveLength(2);
});

test('NXDOMAIN with an SOA is cached for its negative TTL; without an SOA it is asked every time', async () => {
  const [up] = await upstreams(1);
  up.handler = (m) => {
    const name = packet.decode(m).questions![0].name;
    return makeReply(m, { flags: RCODE_FLAG.NXDOMAIN, authorities: name.startsWith('soa') ? [soa('example.org', 600, 10)] : [] });
  };
  const f = forwarder([up.address]);
  for (const name of ['soa.example.org', 'nosoa.example.org']) {
    for (let i = 0; i < 2; i++) {
      const { msg, query } = makeQuery(name);
      expect(rcodeOf(await f.forward(msg, query, 'udp'))).toBe(3);
    }
  }
  expect(up.received.map((r) => packet.decode(r.msg).questions![0].name)).toEqual(['soa.example.org', 'nosoa.example.org', 'nosoa.example.org']);
  timers.now += 10_000;
  const { msg, query } = makeQuery('soa.example.org');
  await f.forward(msg, query, 'udp');
  expect(up.received).toHaveLength(4);
});

test('a dead first upstream: the second answers after the first try times out', async () => {
  const [dead, live] = await upstreams(2);
  live.handler = (m) => makeReply(m, { answers: [a('www.example.org', 60, '192.0.2.9')] });
  const f = forwarder([dead.address, live.address]);
  const { msg, query } = makeQuery('www.example.org');
  const box = observe(f.forward(msg, query, 'udp'));
  await until(() => dead.received.length === 1);
  timers.advance(1499);
  await new Promise((r) => setImmediate(r));
  expect(live.received).toHaveLength(0);
  timers.advance(1);
  await until(() => box.reply !== undefined);
  expect(answerOf(box.reply!)).toEqual(['192.0.2.9']);

  // The next query starts with the upstream that answered: no timeout to sit through.
  const next = makeQuery('next.example.org');
  expect(answerOf(await f.forward(next.msg, next.query, 'udp'))).toEqual(['192.0.2.9']);
  expect(dead.received).toHaveLength(1);
});

test('a query waiting on a slow upstream never holds up another forwarded query', async () => {
  const [up] = await upstreams(1);
  up.handler = (m) => (packet.decode(m).questions![0].name.startsWith('slow') ? undefined : makeReply(m, { answers: [a('fast.example.org', 60, '192.0.2.15')] }));
  const f = forwarder([up.address]);
  const slow = makeQuery('slow.example.org');
  const box = observe(f.forward(slow.msg, slow.query, 'udp'));
  const fast = makeQuery('fast.example.org');
  expect(answerOf(await f.forward(fast.msg, fast.query, 'udp'))).toEqual(['192.0.2.15']);
  expect(box.reply).toBeUndefined();
  timers.advance(4000);
  await until(() => box.reply !== undefined);
  expect(rcodeOf(box.reply!)).toBe(2);
});

test('all upstreams dead: SERVFAIL exactly at the overall bound, every upstream tried', async () => {
  const [d1, d2] = await upstreams(2);
  const f = forwarder([d1.address, d2.address]);
  const { msg, query } = makeQuery('www.example.org', 'A', { id: 77 });
  const box = observe(f.forward(msg, query, 'udp'));
  await until(() => d1.received.length === 1);
  timers.advance(1500);
  await until(() => d2.received.length === 1);
  timers.advance(1500);
  await until(() => d1.received.length === 2);
  timers.advance(999);
  await new Promise((r) => setImmediate(r));
  expect(box.reply).toBeUndefined();
  timers.advance(1);
  await until(() => box.reply !== undefined);
  expect(rcodeOf(box.reply!)).toBe(2);
  expect(idOf(box.reply!)).toBe(77);
  expect(f.pendingQueries).toBe(0);
  expect(timers.live).toBe(0);
});

// Hosts with IPv6 disabled have no ::1 to bind a fake upstream on.
const hasV6Loopback = Object.values(os.networkInterfaces()).some((addrs) => addrs?.some((x) => x.address === '::1'));

(hasV6Loopback ? test : test.skip)('an IPv6 upstream is reached over the IPv6 socket, its address matched whatever its spelling', async () => {
  const up = await FakeUpstream.start('::1');
  ups.push(up);
  up.handler = (m) => makeReply(m, { answers: [a('v6.example.org', 60, '192.0.2.16')] });
  const f = forwarder([{ address: '0:0:0:0:0:0:0:1', port: up.port }]);
  const { msg, query } = makeQuery('v6.example.org');
  expect(answerOf(await f.forward(msg, query, 'udp'))).toEqual(['192.0.2.16']);
  const tcp = makeQuery('v6tcp.example.org');
  expect(answerOf(await f.forward(tcp.msg, tcp.query, 'tcp'))).toEqual(['192.0.2.16']);
});

test('no upstreams (none, or only tsnet itself): SERVFAIL at once', async () => {
  const f = forwarder([]);
  const { msg, query } = makeQuery('www.example.org', 'A', { id: 5 });
  const reply = await f.forward(msg, query, 'udp');
  expect([rcodeOf(reply), idOf(reply)]).toEqual([2, 5]);
});

test('a truncated UDP reply is retried over TCP to the same upstream; TCP clients go over TCP', async () => {
  const [up] = await upstreams(1);
  const many = Array.from({ length: 40 }, (_, i) => a('big.example.org', 60, `192.0.2.${i + 1}`));
  up.handler = (m, via) => (via === 'udp' ? makeReply(m, { flags: 0x0200 }) : makeReply(m, { answers: many }));
  const f = forwarder([up.address]);
  const big = makeQuery('big.example.org', 'A', { edns: { udpSize: 4096 } });
  const reply = await f.forward(big.msg, big.query, 'udp');
  expect(answerOf(reply)).toHaveLength(40);
  expect([up.count('udp'), up.count('tcp')]).toEqual([1, 1]);

  const overTcp = makeQuery('tcp.example.org');
  await f.forward(overTcp.msg, overTcp.query, 'tcp');
  expect([up.count('udp'), up.count('tcp')]).toEqual([1, 2]);

  // The whole answer is cached: the same question over UDP is served from it (the resolver fits it to the client).
  const again = makeQuery('big.example.org', 'A', { edns: { udpSize: 4096 } });
  expect(answerOf(await f.forward(again.msg, again.query, 'udp'))).toHaveLength(40);
  expect([up.count('udp'), up.count('tcp')]).toEqual([1, 2]);
});

test('when TCP fails after a truncated UDP reply, the UDP client gets the truncated reply (not cached)', async () => {
  const [up] = await upstreams(1);
  up.handler = (m, via) => (via === 'udp' ? makeReply(m, { flags: 0x0200, answers: [a('tc.example.org', 60, '192.0.2.1')] }) : undefined);
  await new Promise<void>((r) => up.tcp.close(() => r()));
  const f = forwarder([up.address]);
  const { msg, query } = makeQuery('tc.example.org');
  const reply = await f.forward(msg, query, 'udp');
  expect(reply.readUInt16BE(2) & 0x0200).toBe(0x0200);
  await f.forward(msg, query, 'udp');
  expect(up.count('udp')).toBe(2);
});

test('spoofed replies (wrong source port or address, wrong ID, wrong question, not a response) are ignored; the real one is taken', async () => {
  const [up] = await upstreams(1);
  const spoofer = dgram.createSocket('udp4');
  await new Promise<void>((r) => spoofer.bind(0, '127.0.0.1', r));
  // The upstream's port on another loopback address: right port, wrong address.
  const otherAddress = dgram.createSocket('udp4');
  await new Promise<void>((r) => otherAddress.bind(up.port, '127.0.0.2', r));
  const send = (sock: dgram.Socket, b: Buffer, to: dgram.RemoteInfo) => new Promise<void>((r) => sock.send(b, to.port, to.address, () => r()));
  up.handler = async (m, _via, from) => {
    const fake = (ip: string) => makeReply(m, { answers: [a('www.example.org', 60, ip)] });
    await send(spoofer, fake('203.0.113.1'), from!); // right ID and question, wrong port
    await send(otherAddress, fake('203.0.113.5'), from!);
    const wrongId = fake('203.0.113.2');
    wrongId.writeUInt16BE((idOf(m) + 1) & 0xffff, 0);
    await send(up.udp, wrongId, from!);
    const other = makeReply(makeQuery('evil.example.org', 'A', { id: idOf(m) }).msg, { answers: [a('evil.example.org', 60, '203.0.113.3')] });
    await send(up.udp, other, from!);
    const asQuery = Buffer.from(fake('203.0.113.4'));
    asQuery.writeUInt16BE(asQuery.readUInt16BE(2) & ~0x8000, 2);
    await send(up.udp, asQuery, from!);
    return fake('192.0.2.10');
  };
  const f = forwarder([up.address]);
  try {
    const { msg, query } = makeQuery('www.example.org');
    expect(answerOf(await f.forward(msg, query, 'udp'))).toEqual(['192.0.2.10']);
  } finally {
    spoofer.close();
    otherAddress.close();
  }
});

test('the UDP socket is renewed after rotateAfter queries; a rotated-out one still takes its replies, then closes', async () => {
  const { up, release } = await holdingUpstream('192.0.2.17');
  const f = forwarder([up.address], { rotateAfter: 2 });
  const names = ['r1', 'r2', 'r3', 'r4', 'r5'].map((n) => makeQuery(`${n}.example.org`));
  const replies = names.map((q) => f.forward(q.msg, q.query, 'udp'));
  await until(() => up.received.length === 5);
  const ports = up.received.map((r) => r.port);
  expect(ports[1]).toBe(ports[0]);
  expect(ports[3]).toBe(ports[2]);
  expect(new Set([ports[0], ports[2], ports[4]]).size).toBe(3);
  expect(f.udpSockets).toBe(3);
  release();
  expect((await Promise.all(replies)).map(answerOf)).toEqual(Array(5).fill(['192.0.2.17']));
  expect(f.udpSockets).toBe(1);
});

test('identical questions in flight share one upstream exchange; each client gets its ID and letter case', async () => {
  const { up, release } = await holdingUpstream('192.0.2.11');
  const f = forwarder([up.address]);
  const names = ['shared.example.org', 'SHARED.example.org', 'Shared.Example.Org'];
  const qs = names.map((n, i) => makeQuery(n, 'A', { id: 100 + i }));
  const replies = qs.map((q) => f.forward(q.msg, q.query, 'udp'));
  await until(() => up.received.length === 1);
  expect(f.pendingQueries).toBe(3);
  release();
  const got = await Promise.all(replies);
  expect(up.received).toHaveLength(1);
  expect(got.map(idOf)).toEqual([100, 101, 102]);
  expect(got.map((r) => packet.decode(r).questions![0].name)).toEqual(names);
  expect(got.map(answerOf)).toEqual([['192.0.2.11'], ['192.0.2.11'], ['192.0.2.11']]);
});

test('beyond the pending cap a query gets SERVFAIL at once; the others are unaffected', async () => {
  const { up, release } = await holdingUpstream('192.0.2.12');
  const f = forwarder([up.address], { maxPending: 2 });
  const q1 = makeQuery('one.example.org');
  const q2 = makeQuery('two.example.org');
  const q3 = makeQuery('three.example.org', 'A', { id: 3 });
  const p1 = f.forward(q1.msg, q1.query, 'udp');
  const p2 = f.forward(q2.msg, q2.query, 'udp');
  const third = await f.forward(q3.msg, q3.query, 'udp');
  expect([rcodeOf(third), idOf(third)]).toEqual([2, 3]);
  release();
  expect((await Promise.all([p1, p2])).map(rcodeOf)).toEqual([0, 0]);
  expect(up.received).toHaveLength(2);
});

test('a malformed upstream reply (compression loop, cut short) is not cached and is answered SERVFAIL', async () => {
  const [up] = await upstreams(1);
  const f = forwarder([up.address]);
  for (const spoil of [
    (r: Buffer) => {
      // The answer's owner name (right after the question) replaced by a pointer to itself.
      const at = 12 + 17 + 4;
      return Buffer.concat([r.subarray(0, at), Buffer.from([0xc0, at]), r.subarray(at + 17)]);
    },
    (r: Buffer) => r.subarray(0, r.length - 3),
  ]) {
    up.received = [];
    up.handler = (m) => spoil(makeReply(m, { answers: [a('bad.example.org', 60, '192.0.2.13')] }));
    const { msg, query } = makeQuery('bad.example.org', 'A', { id: 9 });
    const reply = await f.forward(msg, query, 'udp');
    expect([rcodeOf(reply), idOf(reply)]).toEqual([2, 9]);
    // Every round tried it again, and the next query does too: nothing was cached.
    expect(up.received).toHaveLength(3);
    await f.forward(msg, query, 'udp');
    expect(up.received).toHaveLength(6);
  }
});

test('SERVFAIL from the first upstream: the second is asked; its answer wins', async () => {
  const [bad, good] = await upstreams(2);
  bad.handler = (m) => makeReply(m, { flags: RCODE_FLAG.SERVFAIL });
  good.handler = (m) => makeReply(m, { answers: [a('www.example.org', 60, '192.0.2.14')] });
  const f = forwarder([bad.address, good.address]);
  const { msg, query } = makeQuery('www.example.org');
  expect(answerOf(await f.forward(msg, query, 'udp'))).toEqual(['192.0.2.14']);
});

test('close() answers waiting queries SERVFAIL and later ones too', async () => {
  const [dead] = await upstreams(1);
  const f = forwarder([dead.address]);
  const { msg, query } = makeQuery('www.example.org');
  const box = observe(f.forward(msg, query, 'udp'));
  await until(() => dead.received.length === 1);
  await f.close();
  await until(() => box.reply !== undefined);
  expect(rcodeOf(box.reply!)).toBe(2);
  expect(rcodeOf(await f.forward(msg, query, 'udp'))).toBe(2);
  expect(timers.live).toBe(0);
});

test('an internal failure while forwarding is SERVFAIL and logged at warn once, not once per query', async () => {
  const write = jest.spyOn(log, 'write');
  try {
    fwd = new UpstreamForwarder({
      upstreams: {
        current: () => {
          throw new Error('upstream list broken');
        },
      },
      timer: timers.start,
    });
    for (let i = 0; i < 5; i++) {
      const { msg, query } = makeQuery(`q${i}.example.org`);
      expect(rcodeOf(await fwd.forward(msg, query, 'udp'))).toBe(2);
    }
    const warns = write.mock.calls.map((c) => c[0] as { level: string; message: string }).filter((e) => e.level === 'warn' && e.message === 'forwarding failed');
    expect(warns).toHaveLength(1);
  } finally {
    write.mockRestore();
  }
});
