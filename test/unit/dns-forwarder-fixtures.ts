import * as packet from 'dns-packet';
import type { Query } from '../../src/dns/contract';

/** Fixtures of the forwarder's tests: queries as the server hands them over, and upstream replies encoded by dns-packet. */

/** A query's wire form and its parsed form (built here, not by src/dns/wire.ts, so these tests stand alone). */
export function makeQuery(name: string, type: packet.RecordType = 'A', opts: { id?: number; edns?: { udpSize: number; dnssecOk?: boolean } } = {}): { msg: Buffer; query: Query } {
  const id = opts.id ?? 0x1234;
  const additionals = opts.edns ? [opt(opts.edns.udpSize, opts.edns.dnssecOk ? packet.DNSSEC_OK : 0)] : [];
  const msg = packet.encode({ type: 'query', id, flags: packet.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }], additionals });
  const questionEnd = 12 + name.split('.').reduce((n, label) => n + label.length + 1, 1) + 4;
  const query: Query = {
    id,
    flags: msg.readUInt16BE(2),
    opcode: 0,
    question: { name: name.toLowerCase(), type: msg.readUInt16BE(questionEnd - 4), class: 1 },
    questionEnd,
    edns: opts.edns ? { udpSize: Math.max(512, opts.edns.udpSize), version: 0, dnssecOk: opts.edns.dnssecOk ?? false } : undefined,
  };
  return { msg, query };
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

/** An OPT record (dns-packet's type wants fields its encoder derives from `flags`). */
export function opt(udpPayloadSize: number, flags = 0): packet.Answer {
  return { type: 'OPT', name: '.', udpPayloadSize, flags } as packet.Answer;
}
