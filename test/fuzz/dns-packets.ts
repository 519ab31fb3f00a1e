/**
 * Deterministic DNS packets for fuzzing a listener: well-formed queries, mutations of them (bit flips, cuts,
 * extensions, rewritten counts, compression pointers and loops, oversized labels) and random bytes. The unit suite
 * (test/unit/dns-fuzz.test.ts) sends thousands; the bench target sends ≥ 100k with the same generator.
 */

/** mulberry32: a tiny seeded PRNG, so a failing packet is reproducible from (seed, index). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NAMES = ['web', 'api', 'shared', 'crowd', 'web.front', 'web.front.tsnet', 'tsnet', 'ns.tsnet', '2.0.30.172.in-addr.arpa', 'example.com', ''];
const TYPES = [1, 2, 6, 12, 28, 41, 252, 255, 15, 16];

function encodeName(name: string): Buffer {
  const parts = name === '' ? [] : name.split('.');
  return Buffer.concat([...parts.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p, 'latin1')])), Buffer.from([0])]);
}

/** A well-formed query (sometimes with an OPT record, a random ID and letter case). */
export function validQuery(rand: () => number): Buffer {
  const int = (n: number) => Math.floor(rand() * n);
  let name = NAMES[int(NAMES.length)];
  if (rand() < 0.3) name = name.replace(/[a-z]/g, (c) => (rand() < 0.5 ? c.toUpperCase() : c));
  const edns = rand() < 0.5;
  const header = Buffer.alloc(12);
  header.writeUInt16BE(int(65536), 0);
  header.writeUInt16BE(rand() < 0.8 ? 0x0100 : 0, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(edns ? 1 : 0, 10);
  const q = Buffer.alloc(4);
  q.writeUInt16BE(TYPES[int(TYPES.length)], 0);
  q.writeUInt16BE(rand() < 0.9 ? 1 : int(65536), 2);
  const opt = Buffer.from([0, 0, 41, 0, 0, 0, 0, 0, 0, 0, 0]);
  opt.writeUInt16BE(int(5000), 3);
  if (rand() < 0.1) opt[6] = int(3); // EDNS version
  if (rand() < 0.3) opt.writeUInt16BE(0x8000, 7);
  return Buffer.concat([header, encodeName(name), q, ...(edns ? [opt] : [])]);
}

type Mutation = (p: Buffer, rand: () => number) => Buffer;

const MUTATIONS: Mutation[] = [
  // flip a few bits anywhere
  (p, rand) => {
    const out = Buffer.from(p);
    for (let i = 0, n = 1 + Math.floor(rand() * 4); i < n; i++) out[Math.floor(rand() * out.length)] ^= 1 << Math.floor(rand() * 8);
    return out;
  },
  // cut short
  (p, rand) => p.subarray(0, Math.floor(rand() * p.length)),
  // trailing garbage
  (p, rand) => Buffer.concat([p, Buffer.from(Array.from({ length: 1 + Math.floor(rand() * 40) }, () => Math.floor(rand() * 256)))]),
  // rewrite a section count (QDCOUNT 65535 and friends)
  (p, rand) => {
    const out = Buffer.from(p);
    if (out.length >= 12) out.writeUInt16BE([0, 2, 65535, Math.floor(rand() * 65536)][Math.floor(rand() * 4)], 4 + 2 * Math.floor(rand() * 4));
    return out;
  },
  // a compression pointer in the question: to itself, backwards, forwards, past the end
  (p, rand) => {
    const out = Buffer.from(p);
    if (out.length >= 14) out.writeUInt16BE(0xc000 | [12, 0, 13, 0x3fff][Math.floor(rand() * 4)], 12);
    return out;
  },
  // response bit, other opcodes
  (p, rand) => {
    const out = Buffer.from(p);
    if (out.length >= 4) out[2] = Math.floor(rand() * 256);
    return out;
  },
  // an oversized or reserved label length byte
  (p, rand) => {
    const out = Buffer.from(p);
    if (out.length >= 13) out[12] = 64 + Math.floor(rand() * 192);
    return out;
  },
  // many questions (the dns2 < 3.1.1 stall)
  (p) => {
    const out = Buffer.concat([p.subarray(0, 12), ...Array.from({ length: 2000 }, () => Buffer.from([0, 0, 1, 0, 1]))]);
    if (out.length >= 12) out.writeUInt16BE(2000, 4);
    return out;
  },
];

/** The i-th packet of a run: a valid query, a mutation of one (or of two stacked), or random bytes. */
export function fuzzPacket(rand: () => number): Buffer {
  const r = rand();
  if (r < 0.1) return validQuery(rand);
  if (r < 0.85) {
    let p = MUTATIONS[Math.floor(rand() * MUTATIONS.length)](validQuery(rand), rand);
    if (rand() < 0.3) p = MUTATIONS[Math.floor(rand() * MUTATIONS.length)](p, rand);
    return p;
  }
  return Buffer.from(Array.from({ length: Math.floor(rand() * 600) }, () => Math.floor(rand() * 256)));
}

/** `count` packets from `seed`. */
export function* fuzzPackets(seed: number, count: number): Generator<Buffer> {
  const rand = prng(seed);
  for (let i = 0; i < count; i++) yield fuzzPacket(rand);
}
