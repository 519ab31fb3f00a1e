import { DnsCache, cacheKey } from '../../src/dns/cache';
import { walkMessage, soaMinimum, answersQuestion, skipName } from '../../src/dns/message';
import { a, opt, makeQuery, makeReply, RCODE_FLAG, soa, ttlsOf } from './dns-forwarder-fixtures';

/** The reply cache and the response walker under it, on an injected clock. */
let clock = 0;
const now = () => clock;
beforeEach(() => (clock = 1_000_000));

function store(cache: DnsCache, name: string, reply: (msg: Buffer) => Buffer, edns?: { udpSize: number; dnssecOk?: boolean }) {
  const { msg, query } = makeQuery(name, 'A', { edns });
  const r = reply(msg);
  const walked = walkMessage(r);
  expect(walked).toBeDefined();
  return { key: cacheKey(query), stored: cache.put(cacheKey(query), r, walked!), reply: r };
}

test('a positive answer lives for the smallest answer TTL and is served with every TTL counted down', () => {
  const cache = new DnsCache({ now });
  const { key, stored } = store(cache, 'www.example.org', (m) =>
    makeReply(m, { answers: [a('www.example.org', 300, '192.0.2.1'), a('www.example.org', 60, '192.0.2.2')], authorities: [soa('example.org', 900, 120)] }),
  );
  expect(stored).toBe(true);
  expect(ttlsOf(cache.get(key)!)).toEqual({ answers: [300, 60], authorities: [900] });
  clock += 59_999;
  expect(ttlsOf(cache.get(key)!)).toEqual({ answers: [241, 1], authorities: [841] });
  clock += 1;
  expect(cache.get(key)).toBeUndefined();
  expect(cache.size).toBe(0);
});

test('the OPT record is served untouched (its TTL field holds EDNS flags, not a TTL)', () => {
  const cache = new DnsCache({ now });
  const { key, reply } = store(
    cache,
    'edns.example.org',
    (m) => makeReply(m, { answers: [a('edns.example.org', 30, '192.0.2.1')], additionals: [opt(1232, 0x8000)] }),
    { udpSize: 1232, dnssecOk: true },
  );
  clock += 10_000;
  const served = cache.get(key)!;
  expect(served.subarray(served.length - 11)).toEqual(reply.subarray(reply.length - 11));
  expect(ttlsOf(served).answers).toEqual([20]);
});

test('positive lifetimes are capped (1 h by default)', () => {
  const cache = new DnsCache({ now });
  const { key } = store(cache, 'long.example.org', (m) => makeReply(m, { answers: [a('long.example.org', 86400, '192.0.2.1')] }));
  clock += 3600_000 - 1;
  expect(cache.get(key)).toBeDefined();
  clock += 1;
  expect(cache.get(key)).toBeUndefined();
});

test('NXDOMAIN and NODATA are cached for min(SOA TTL, MINIMUM), capped at 5 min', () => {
  const cache = new DnsCache({ now });
  const nx = store(cache, 'nx.example.org', (m) => makeReply(m, { flags: RCODE_FLAG.NXDOMAIN, authorities: [soa('example.org', 900, 40)] }));
  const nodata = store(cache, 'nodata.example.org', (m) => makeReply(m, { authorities: [soa('example.org', 30, 3600)] }));
  const capped = store(cache, 'capped.example.org', (m) => makeReply(m, { flags: RCODE_FLAG.NXDOMAIN, authorities: [soa('example.org', 86400, 86400)] }));
  expect([nx.stored, nodata.stored, capped.stored]).toEqual([true, true, true]);
  clock += 29_999;
  expect(ttlsOf(cache.get(nodata.key)!).authorities).toEqual([1]);
  clock += 1;
  expect(cache.get(nodata.key)).toBeUndefined();
  clock += 10_000 - 1;
  expect(cache.get(nx.key)!.readUInt16BE(2) & 0xf).toBe(3);
  clock += 1;
  expect(cache.get(nx.key)).toBeUndefined();
  clock = 1_000_000 + 300_000 - 1;
  expect(cache.get(capped.key)).toBeDefined();
  clock += 1;
  expect(cache.get(capped.key)).toBeUndefined();
});

test('a negative answer without an SOA, SERVFAIL, TC and zero-TTL replies are not cached', () => {
  const cache = new DnsCache({ now });
  const cases = [
    store(cache, 'nosoa.example.org', (m) => makeReply(m, { flags: RCODE_FLAG.NXDOMAIN })),
    store(cache, 'nodata-nosoa.example.org', (m) => makeReply(m)),
    store(cache, 'fail.example.org', (m) => makeReply(m, { flags: RCODE_FLAG.SERVFAIL, authorities: [soa('example.org', 60, 60)] })),
    store(cache, 'tc.example.org', (m) => makeReply(m, { flags: 0x0200, answers: [a('tc.example.org', 60, '192.0.2.1')] })),
    store(cache, 'zero.example.org', (m) => makeReply(m, { answers: [a('zero.example.org', 0, '192.0.2.1')] })),
  ];
  expect(cases.map((c) => c.stored)).toEqual([false, false, false, false, false]);
  expect(cases.map((c) => cache.get(c.key))).toEqual([undefined, undefined, undefined, undefined, undefined]);
});

test('the key is the lower-cased question and the EDNS/DO state', () => {
  const plain = cacheKey(makeQuery('WWW.Example.org').query);
  expect(cacheKey(makeQuery('www.example.org').query)).toBe(plain);
  expect(cacheKey(makeQuery('www.example.org', 'AAAA').query)).not.toBe(plain);
  const edns = cacheKey(makeQuery('www.example.org', 'A', { edns: { udpSize: 1232 } }).query);
  const dnssec = cacheKey(makeQuery('www.example.org', 'A', { edns: { udpSize: 1232, dnssecOk: true } }).query);
  expect(new Set([plain, edns, dnssec]).size).toBe(3);
});

test('entries are bounded: the least recently used one goes first', () => {
  const cache = new DnsCache({ now, maxEntries: 2 });
  const one = store(cache, 'one.example.org', (m) => makeReply(m, { answers: [a('one.example.org', 60, '192.0.2.1')] }));
  const two = store(cache, 'two.example.org', (m) => makeReply(m, { answers: [a('two.example.org', 60, '192.0.2.2')] }));
  expect(cache.get(one.key)).toBeDefined(); // one is now the most recent
  const three = store(cache, 'three.example.org', (m) => makeReply(m, { answers: [a('three.example.org', 60, '192.0.2.3')] }));
  expect(cache.size).toBe(2);
  expect(cache.get(two.key)).toBeUndefined();
  expect(cache.get(one.key)).toBeDefined();
  expect(cache.get(three.key)).toBeDefined();
});

test('entries are bounded in bytes too: big replies push the oldest out, one bigger than the bound is not kept', () => {
  const big = (name: string) => (m: Buffer) =>
    makeReply(m, { answers: Array.from({ length: 100 }, (_, i) => a(name, 60, `192.0.2.${i + 1}`)) });
  const size = store(new DnsCache({ now }), 'size.example.org', big('size.example.org')).reply.length;
  const cache = new DnsCache({ now, maxBytes: 2 * size + size / 2 });
  const one = store(cache, 'aaaa.example.org', big('aaaa.example.org'));
  const two = store(cache, 'bbbb.example.org', big('bbbb.example.org'));
  const three = store(cache, 'cccc.example.org', big('cccc.example.org'));
  expect(cache.size).toBe(2);
  expect(cache.get(one.key)).toBeUndefined();
  expect(cache.get(two.key)).toBeDefined();
  expect(cache.get(three.key)).toBeDefined();
  // Replacing an entry and expiry give its bytes back.
  const again = new DnsCache({ now, maxBytes: 2 * size + size / 2 });
  for (let i = 0; i < 5; i++) store(again, 'aaaa.example.org', big('aaaa.example.org'));
  store(again, 'bbbb.example.org', big('bbbb.example.org'));
  expect(again.size).toBe(2);
  clock += 60_000;
  expect(again.get(one.key)).toBeUndefined();
  expect(again.get(two.key)).toBeUndefined();
  const four = store(again, 'dddd.example.org', big('dddd.example.org'));
  const five = store(again, 'eeee.example.org', big('eeee.example.org'));
  expect(again.size).toBe(2);
  expect(again.get(four.key)).toBeDefined();
  expect(again.get(five.key)).toBeDefined();
  const tiny = new DnsCache({ now, maxBytes: size - 1 });
  expect(store(tiny, 'huge.example.org', big('huge.example.org')).stored).toBe(false);
  expect(tiny.size).toBe(0);
});

describe('walkMessage', () => {
  const { msg } = makeQuery('walk.example.org');
  const good = makeReply(msg, { answers: [a('walk.example.org', 60, '192.0.2.1')], authorities: [soa('example.org', 60, 30)] });

  test('returns every RR with its TTL offset, and the SOA MINIMUM through compressed names', () => {
    const w = walkMessage(good)!;
    expect(w.rrs.map((r) => [r.section, r.type, r.ttl, good.readUInt32BE(r.ttlOffset)])).toEqual([
      ['answer', 1, 60, 60],
      ['authority', 6, 60, 60],
    ]);
    expect(soaMinimum(good, w.rrs[1])).toBe(30);
  });

  test('a compression pointer loop, a pointer past the end, a cut-short or padded message is malformed', () => {
    // dns-packet writes names uncompressed: the answer's owner (18 bytes) starts right after the question.
    const ownerAt = walkMessage(good)!.questionEnd;
    const withOwner = (owner: number[]) => Buffer.concat([good.subarray(0, ownerAt), Buffer.from(owner), good.subarray(ownerAt + 18)]);
    expect(walkMessage(withOwner([0xc0, 12]))).toBeDefined(); // a pointer to the question is fine
    const loop = withOwner([0xc0, ownerAt]);
    const forward = withOwner([0xff, 0xff]);
    expect(walkMessage(loop)).toBeUndefined();
    expect(walkMessage(forward)).toBeUndefined();
    // A loop through two pointers: the question's name made to point at the answer's owner, which points back.
    const twoStep = Buffer.from(loop);
    twoStep.writeUInt16BE(0xc000 | 12, ownerAt);
    twoStep.writeUInt16BE(0xc000 | ownerAt, 12);
    expect(walkMessage(twoStep)).toBeUndefined();
    expect([skipName(loop, ownerAt), skipName(twoStep, 12), skipName(forward, ownerAt)]).toEqual([undefined, undefined, undefined]);
    expect(skipName(withOwner([0xc0, 12]), ownerAt)).toBe(ownerAt + 2);
    for (let cut = 0; cut < good.length; cut++) expect(walkMessage(good.subarray(0, cut))).toBeUndefined();
    expect(walkMessage(Buffer.concat([good, Buffer.from([0])]))).toBeUndefined();
  });

  test('answersQuestion accepts the same question in any letter case only in a response', () => {
    const upper = Buffer.from(good);
    upper.write('WALK', 13, 'latin1');
    expect(answersQuestion(upper, msg, 12 + 18 + 4)).toBe(true);
    expect(answersQuestion(msg, msg, 12 + 18 + 4)).toBe(false);
    const other = makeReply(makeQuery('talk.example.org').msg);
    expect(answersQuestion(other, msg, 12 + 18 + 4)).toBe(false);
  });
});
