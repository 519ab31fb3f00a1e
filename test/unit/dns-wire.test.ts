import * as dnsPacket from 'dns-packet';
import type { Query } from '../../src/dns/contract';
import {
  encodeResponse,
  failureResponse,
  isParseFailure,
  parseQuery,
  patchResponse,
  RCODE,
  truncate,
  TYPE,
  type ParseFailure,
  type ResourceRecord,
} from '../../src/dns/wire';
import { header, query, rdata } from './dns-fixtures';

function parsed(msg: Buffer): Query {
  const q = parseQuery(msg);
  if (isParseFailure(q)) throw new Error(`expected a query, got ${q.error}`);
  return q;
}
function failed(msg: Buffer): ParseFailure {
  const q = parseQuery(msg);
  if (!isParseFailure(q)) throw new Error('expected a failure');
  return q;
}

const a = (owner: string, addr: number[]): ResourceRecord => ({
  owner: owner.split('.'),
  type: TYPE.A,
  ttl: 5,
  data: { kind: 'bytes', bytes: Buffer.from(addr) },
});

describe('parseQuery', () => {
  test('a plain query: id, lower-cased name, type, class, where the question ends, no EDNS', () => {
    const msg = query('Web.Front.TSNET', 'A', { id: 4242 });
    const q = parsed(msg);
    expect(q).toMatchObject({ id: 4242, opcode: 0, question: { name: 'web.front.tsnet', type: 1, class: 1 } });
    expect(q.questionEnd).toBe(msg.length);
    expect(q.edns).toBeUndefined();
  });

  test('EDNS: the offered size (raised to 512), version and DO bit', () => {
    expect(parsed(query('x', 'A', { udpSize: 4096, dnssecOk: true })).edns).toEqual({ udpSize: 4096, version: 0, dnssecOk: true });
    expect(parsed(query('x', 'A', { udpSize: 100 })).edns).toEqual({ udpSize: 512, version: 0, dnssecOk: false });
  });

  test('the root name and bytes outside LDH render as presentation text', () => {
    expect(parsed(query('', 'NS')).question.name).toBe('');
    const raw = query('ab', 'A');
    raw[13] = 0x2e; // "a.b" as one label must not read as two
    expect(parsed(raw).question.name).toBe('\\046b');
  });

  test('a response sent as a query, or a cut header, is dropped', () => {
    const msg = query('x', 'A');
    msg[2] |= 0x80;
    expect(failed(msg).error).toBe('drop');
    expect(failed(query('x', 'A').subarray(0, 11)).error).toBe('drop');
    expect(failureResponse(msg, failed(msg))).toBeNull();
  });

  test('opcode ≠ 0 → NOTIMP', () => {
    const msg = query('x', 'A');
    msg[2] |= 2 << 3; // STATUS
    expect(failed(msg).error).toBe('notimp');
  });

  test.each([
    ['QDCOUNT 0', (m: Buffer) => m.writeUInt16BE(0, 4)],
    ['QDCOUNT 2', (m: Buffer) => m.writeUInt16BE(2, 4)],
    ['QDCOUNT 65535', (m: Buffer) => m.writeUInt16BE(65535, 4)],
    ['ANCOUNT 1', (m: Buffer) => m.writeUInt16BE(1, 6)],
    ['NSCOUNT 1', (m: Buffer) => m.writeUInt16BE(1, 8)],
    ['ARCOUNT 1 without a record', (m: Buffer) => m.writeUInt16BE(1, 10)],
  ])('%s → FORMERR', (_name, mutate) => {
    const msg = query('web', 'A');
    mutate(msg);
    expect(failed(msg).error).toBe('formerr');
  });

  test('ARCOUNT 2 → FORMERR, and no OPT is read from a message of the wrong shape', () => {
    const msg = query('web', 'A', { udpSize: 1232 });
    msg.writeUInt16BE(2, 10);
    const f = failed(msg);
    expect(f.error).toBe('formerr');
    expect(f.edns).toBeUndefined();
  });

  test('a label over 63, a name over 255, a compression pointer (even a self-pointing one) in the question → FORMERR', () => {
    const long = Buffer.concat([header(1), Buffer.from([64]), Buffer.alloc(64, 0x61), Buffer.from([0, 0, 1, 0, 1])]);
    expect(failed(long).error).toBe('formerr');
    const labels = Array.from({ length: 5 }, () => 'a'.repeat(60)).join('.');
    expect(failed(query(labels, 'A')).error).toBe('formerr');
    const self = Buffer.concat([header(1), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
    expect(failed(self).error).toBe('formerr');
    const reserved = Buffer.concat([header(1), Buffer.from([0x41, 0, 0, 1, 0, 1])]);
    expect(failed(reserved).error).toBe('formerr');
  });

  test('a name of exactly 255 octets parses; 256 does not', () => {
    // 3×(1+63) + (1+61) + root = 255
    const ok = ['a'.repeat(63), 'b'.repeat(63), 'c'.repeat(63), 'd'.repeat(61)].join('.');
    expect(parsed(query(ok, 'A')).question.name).toBe(ok);
    expect(failed(query(ok + 'x', 'A')).error).toBe('formerr');
  });

  test('cut short anywhere after the header → FORMERR; trailing bytes → FORMERR', () => {
    const msg = query('web.front', 'AAAA', { udpSize: 1232 });
    for (let n = 12; n < msg.length; n++) expect({ n, error: failed(msg.subarray(0, n)).error }).toEqual({ n, error: 'formerr' });
    expect(failed(Buffer.concat([query('web', 'A'), Buffer.from([0])])).error).toBe('formerr');
  });

  test('the additional record not an OPT, or an OPT with a non-root owner → FORMERR', () => {
    const notOpt = Buffer.concat([query('web', 'A'), Buffer.from([0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0])]);
    notOpt.writeUInt16BE(1, 10);
    expect(failed(notOpt).error).toBe('formerr');
    const named = Buffer.concat([query('web', 'A'), Buffer.from([1, 0x61, 0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0])]);
    named.writeUInt16BE(1, 10);
    expect(failed(named).error).toBe('formerr');
  });

  test('EDNS version 1 → BADVERS (extended rcode 16 in the OPT), with the question', () => {
    const msg = query('web', 'A', { udpSize: 1232 });
    msg[msg.length - 5] = 1; // OPT: owner, type, class, ext-rcode, VERSION, flags, rdlen
    const f = failed(msg);
    expect(f.error).toBe('badvers');
    const r = dnsPacket.decode(failureResponse(msg, f)!);
    const opt = r.additionals!.find((x) => x.type === 'OPT') as dnsPacket.OptAnswer;
    expect(opt).toBeDefined();
    expect((r.flags! & 0xf) | (opt.extendedRcode << 4)).toBe(RCODE.BADVERS);
    expect(r.questions).toEqual([{ name: 'web', type: 'A', class: 'IN' }]);
  });
});

describe('encoders', () => {
  test('a reply: ID, RD and opcode echoed, QR/AA/RA set, the question byte for byte, answers compressed to it', () => {
    const msg = query('Web.Front.tsnet', 'A', { id: 7 });
    const q = parsed(msg);
    const out = encodeResponse(msg, q, {
      rcode: 0,
      aa: true,
      ra: true,
      answers: [a('web.front.tsnet', [10, 0, 0, 2]), a('web.front.tsnet', [10, 0, 0, 3])],
    });
    expect(out.subarray(12, q.questionEnd)).toEqual(msg.subarray(12, q.questionEnd));
    expect(out.readUInt16BE(q.questionEnd)).toBe(0xc00c);
    const r = dnsPacket.decode(out);
    expect(r.id).toBe(7);
    expect(r.flag_qr && r.flag_aa && r.flag_rd && r.flag_ra).toBe(true);
    expect(r.answers!.map((x) => [x.name, x.type, rdata(x)])).toEqual([
      ['Web.Front.tsnet', 'A', '10.0.0.2'],
      ['Web.Front.tsnet', 'A', '10.0.0.3'],
    ]);
    expect(r.additionals).toEqual([]);
  });

  test('PTR, SOA and NS data compress against the question and each other, and decode independently', () => {
    const msg = query('tsnet', 'SOA', { udpSize: 1232, dnssecOk: true });
    const q = parsed(msg);
    const out = encodeResponse(msg, q, {
      rcode: 0,
      aa: true,
      ra: false,
      answers: [
        {
          owner: ['tsnet'],
          type: TYPE.SOA,
          ttl: 5,
          data: { kind: 'soa', mname: ['ns', 'tsnet'], rname: ['hostmaster', 'tsnet'], serial: 9, refresh: 1, retry: 2, expire: 3, minimum: 5 },
        },
        { owner: ['tsnet'], type: TYPE.NS, ttl: 5, data: { kind: 'name', name: ['ns', 'tsnet'] } },
      ],
    });
    const r = dnsPacket.decode(out);
    expect(r.flag_ra).toBe(false);
    expect(r.answers![0]).toMatchObject({ type: 'SOA', data: { mname: 'ns.tsnet', rname: 'hostmaster.tsnet', serial: 9, minimum: 5 } });
    expect(r.answers![1]).toMatchObject({ type: 'NS', data: 'ns.tsnet' });
    const opt = r.additionals![0] as dnsPacket.OptAnswer;
    expect(opt.type).toBe('OPT');
    expect(opt.udpPayloadSize).toBe(1232);
    expect(opt.flags & 0x8000).toBe(0x8000);
    // "tsnet" is written once: the question; "ns.tsnet" once; every other name is a pointer.
    expect(out.toString('latin1').split('tsnet').length - 1).toBe(1);
  });

  test('truncate keeps the header bits and rcode, sets TC, keeps only the question and the OPT', () => {
    const msg = query('big', 'A', { udpSize: 1232, id: 99 });
    const q = parsed(msg);
    const full = encodeResponse(msg, q, { rcode: 0, aa: true, ra: true, answers: [a('big', [10, 0, 0, 1])] });
    const r = dnsPacket.decode(truncate(msg, q, full));
    expect(r).toMatchObject({ id: 99, flag_tc: true, flag_aa: true, answers: [], authorities: [] });
    expect(r.questions).toEqual([{ name: 'big', type: 'A', class: 'IN' }]);
    expect(r.additionals!.map((x) => x.type)).toEqual(['OPT']);
    const plain = query('big', 'A');
    const pq = parsed(plain);
    expect(dnsPacket.decode(truncate(plain, pq, encodeResponse(plain, pq, { rcode: 3, aa: true, ra: true }))).additionals).toEqual([]);
  });

  test('error replies: FORMERR/NOTIMP with an OPT when the query had one, none otherwise', () => {
    const notimp = query('x', 'A', { udpSize: 1232, id: 5 });
    notimp[2] |= 4 << 3;
    const r = dnsPacket.decode(failureResponse(notimp, failed(notimp))!);
    expect(r).toMatchObject({ id: 5, rcode: 'NOTIMP', type: 'response' });
    expect(r.additionals!.map((x) => x.type)).toEqual(['OPT']);
    const fe = query('x', 'A');
    fe.writeUInt16BE(1, 8);
    const r2 = dnsPacket.decode(failureResponse(fe, failed(fe))!);
    expect(r2).toMatchObject({ rcode: 'FORMERR', additionals: [] });
  });

  test('patchResponse gives a cached reply the new ID, RD bit and letter case', () => {
    const first = query('web', 'A', { id: 1 });
    const q1 = parsed(first);
    const cached = encodeResponse(first, q1, { rcode: 0, aa: true, ra: true, answers: [a('web', [10, 0, 0, 9])] });
    const second = query('WEB', 'A', { id: 2, rd: false });
    const r = dnsPacket.decode(patchResponse(cached, second, parsed(second)));
    expect(r).toMatchObject({ id: 2, flag_rd: false, questions: [{ name: 'WEB' }] });
    expect(r.answers!.map(rdata)).toEqual(['10.0.0.9']);
  });

  test('answers beyond 64 KiB are left off with TC set (TCP cannot carry them either)', () => {
    const msg = query('many', 'A');
    const q = parsed(msg);
    const answers = Array.from({ length: 5000 }, (_, i) => a('many', [10, 0, i >> 8, i & 255]));
    const out = encodeResponse(msg, q, { rcode: 0, aa: true, ra: true, answers });
    expect(out.length).toBeLessThanOrEqual(65535);
    const r = dnsPacket.decode(out);
    expect(r.flag_tc).toBe(true);
    expect(r.answers!.length).toBe(Math.floor((65535 - q.questionEnd) / 16));
  });
});
