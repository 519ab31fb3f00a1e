/**
 * DNS wire format: a strict parser for queries and the encoders for tsnet's replies. Nothing here allocates per
 * label of untrusted input beyond the question name, follows a compression pointer in a query, or loops longer than
 * the message is long, so no packet can stall or crash the process.
 */

import { assertNever } from '../errors';
import type { Edns, Query } from './contract';

export const TYPE = { A: 1, NS: 2, SOA: 6, PTR: 12, AAAA: 28, OPT: 41, IXFR: 251, AXFR: 252, ANY: 255 } as const;
export const CLASS_IN = 1;
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5, BADVERS: 16 } as const;

/** The UDP payload size tsnet advertises in its OPT records (the DNS flag day 2020 value: no IP fragmentation). */
const ADVERTISED_UDP_SIZE = 1232;
/** A UDP reply to a query without EDNS never exceeds this (RFC 1035 §4.2.1). */
const CLASSIC_UDP_SIZE = 512;
const MAX_MESSAGE = 65535;

/** Header length and flags, also for message.ts's walk of upstream replies. */
export const HEADER = 12;
export const F_QR = 0x8000;
const F_AA = 0x0400;
export const F_TC = 0x0200;
const F_RD = 0x0100;
const F_RA = 0x0080;
const F_CD = 0x0010;
const OPCODE_MASK = 0x7800;
/** Bits of a query's flags a reply echoes: opcode, RD, CD. */
const ECHOED = OPCODE_MASK | F_RD | F_CD;
const EDNS_DO = 0x8000;

/** Why a packet is not a query tsnet answers: reply with FORMERR/NOTIMP/BADVERS, or drop it silently. */
export interface ParseFailure {
  error: 'formerr' | 'notimp' | 'badvers' | 'drop';
  /** Header fields, present whenever the header was whole (then a reply can be sent). */
  id?: number;
  flags?: number;
  /** The query carried an OPT record: the error reply carries one too. */
  edns?: Edns;
  /** Set when the question itself parsed, so the reply can copy it. */
  questionEnd?: number;
}

export function isParseFailure(r: Query | ParseFailure): r is ParseFailure {
  return 'error' in r;
}

/** Bytes of a name's labels rendered as presentation text: lower-cased ASCII, `.`, `\` and non-printables as \DDD. */
function labelText(msg: Buffer, start: number, end: number): string {
  let s = '';
  for (let i = start; i < end; i++) {
    let c = msg[i];
    if (c >= 0x41 && c <= 0x5a) c += 0x20;
    if (c <= 0x20 || c >= 0x7f || c === 0x2e || c === 0x5c) s += '\\' + String(c).padStart(3, '0');
    else s += String.fromCharCode(c);
  }
  return s;
}

/** Skips a record's owner name without following pointers; returns the offset after it or -1 when cut short. */
function skipName(msg: Buffer, off: number): number {
  for (let i = 0; i < 128; i++) {
    if (off >= msg.length) return -1;
    const len = msg[off];
    if (len === 0) return off + 1;
    if ((len & 0xc0) === 0xc0) return off + 2 <= msg.length ? off + 2 : -1;
    if (len > 63) return -2;
    off += 1 + len;
  }
  return -2;
}

/**
 * Parses a query strictly: QR=1 → drop; opcode ≠ 0 → NOTIMP; QDCOUNT ≠ 1, answer or authority records, more than
 * one additional record, an additional record that is not a root OPT, bad labels, a compression pointer in the
 * question, a cut-short message or trailing bytes → FORMERR (drop when even the header is incomplete); EDNS version
 * ≠ 0 → BADVERS.
 */
export function parseQuery(msg: Buffer): Query | ParseFailure {
  if (msg.length < HEADER) return { error: 'drop' };
  const id = msg.readUInt16BE(0);
  const flags = msg.readUInt16BE(2);
  if (flags & F_QR) return { error: 'drop' };
  const qd = msg.readUInt16BE(4);
  const an = msg.readUInt16BE(6);
  const ns = msg.readUInt16BE(8);
  const ar = msg.readUInt16BE(10);
  const opcode = (flags & OPCODE_MASK) >> 11;
  const fail = (error: ParseFailure['error'], edns?: Edns, questionEnd?: number): ParseFailure => ({
    error,
    id,
    flags,
    edns,
    questionEnd,
  });
  // The OPT is looked for only where a well-formed query has it, so that error replies to EDNS queries carry one.
  const shapeOk = qd === 1 && an === 0 && ns === 0 && ar <= 1;
  let off = HEADER;
  const labels: string[] = [];
  let nameBad = false;
  let nameLen = 0;
  for (;;) {
    if (off >= msg.length) return fail('formerr');
    const len = msg[off];
    if (len === 0) {
      off += 1;
      break;
    }
    // A pointer (0xC0) or the reserved label types (0x40, 0x80) never belong in a query's question.
    if (len > 63) {
      nameBad = true;
      break;
    }
    nameLen += len + 1;
    if (nameLen + 1 > 255) {
      nameBad = true;
      break;
    }
    if (off + 1 + len > msg.length) return fail('formerr');
    labels.push(labelText(msg, off + 1, off + 1 + len));
    off += 1 + len;
  }
  if (nameBad || off + 4 > msg.length) return fail(opcode !== 0 ? 'notimp' : 'formerr');
  const qtype = msg.readUInt16BE(off);
  const qclass = msg.readUInt16BE(off + 2);
  off += 4;
  const questionEnd = off;

  let edns: Edns | undefined;
  let optBad = false;
  if (shapeOk && ar === 1) {
    const nameEnd = skipName(msg, off);
    if (nameEnd < 0 || nameEnd + 10 > msg.length) optBad = true;
    else {
      const type = msg.readUInt16BE(nameEnd);
      const rdlen = msg.readUInt16BE(nameEnd + 8);
      if (type !== TYPE.OPT || nameEnd !== off + 1 || nameEnd + 10 + rdlen !== msg.length) optBad = true;
      else {
        edns = {
          udpSize: Math.max(CLASSIC_UDP_SIZE, msg.readUInt16BE(nameEnd + 2)),
          version: msg[nameEnd + 5],
          dnssecOk: (msg.readUInt16BE(nameEnd + 6) & EDNS_DO) !== 0,
        };
        off = msg.length;
      }
    }
  }
  if (opcode !== 0) return fail('notimp', edns, questionEnd);
  if (!shapeOk || optBad || off !== msg.length) return fail('formerr', edns, questionEnd);
  if (edns && edns.version !== 0) return fail('badvers', edns, questionEnd);
  return { id, flags, opcode, question: { name: labels.join('.'), type: qtype, class: qclass }, questionEnd, edns };
}

/** A record's data, pre-encoded where it does not depend on the message (addresses) or as a name to compress. */
export type RecordData =
  | { kind: 'bytes'; bytes: Buffer }
  | { kind: 'name'; name: readonly string[] }
  | {
      kind: 'soa';
      mname: readonly string[];
      rname: readonly string[];
      serial: number;
      refresh: number;
      retry: number;
      expire: number;
      minimum: number;
    };

export interface ResourceRecord {
  /** Owner name as labels (lower-case presentation text, as {@link parseQuery} renders them). */
  owner: readonly string[];
  type: number;
  ttl: number;
  data: RecordData;
}

export interface ResponseBody {
  rcode: number;
  /** Authoritative: tsnet's own names. */
  aa: boolean;
  /** Recursion available: the query may be forwarded. */
  ra: boolean;
  answers?: readonly ResourceRecord[];
  authority?: readonly ResourceRecord[];
}

/** One scratch buffer: encoding is synchronous, and a reply is copied out of it once complete. */
const scratch = Buffer.alloc(MAX_MESSAGE);

/** Writes names with compression against the names already in the message (suffixes, case-insensitively). */
class NameWriter {
  private readonly seen = new Map<string, number>();

  /** Registers the question's name (at offset 12) so answers point at it. */
  addQuestion(labels: readonly string[], msg: Buffer): void {
    let off = HEADER;
    for (let i = 0; i < labels.length; i++) {
      this.seen.set(labels.slice(i).join('.'), off);
      off += 1 + msg[off];
    }
  }

  /** Writes `labels` at `off`; returns the new offset, or -1 when it does not fit. */
  write(labels: readonly string[], off: number): number {
    for (let i = 0; i < labels.length; i++) {
      const suffix = i === 0 ? labels.join('.') : labels.slice(i).join('.');
      const ptr = this.seen.get(suffix);
      if (ptr !== undefined) {
        if (off + 2 > MAX_MESSAGE) return -1;
        scratch.writeUInt16BE(0xc000 | ptr, off);
        return off + 2;
      }
      const label = unescapeLabel(labels[i]);
      if (off + 1 + label.length > MAX_MESSAGE) return -1;
      if (off < 0x4000) this.seen.set(suffix, off);
      scratch[off] = label.length;
      label.copy(scratch, off + 1);
      off += 1 + label.length;
    }
    if (off + 1 > MAX_MESSAGE) return -1;
    scratch[off] = 0;
    return off + 1;
  }
}

/** The wire bytes of a label in presentation text (the inverse of labelText). */
function unescapeLabel(text: string): Buffer {
  if (!text.includes('\\')) return Buffer.from(text, 'latin1');
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '\\') {
      out.push(Number(text.slice(i + 1, i + 4)));
      i += 3;
    } else out.push(text.charCodeAt(i));
  }
  return Buffer.from(out);
}

function writeRecord(w: NameWriter, rr: ResourceRecord, off: number): number {
  off = w.write(rr.owner, off);
  if (off < 0 || off + 10 > MAX_MESSAGE) return -1;
  scratch.writeUInt16BE(rr.type, off);
  scratch.writeUInt16BE(CLASS_IN, off + 2);
  scratch.writeUInt32BE(rr.ttl >>> 0, off + 4);
  const rdStart = off + 10;
  let end: number;
  const d = rr.data;
  switch (d.kind) {
    case 'bytes':
      if (rdStart + d.bytes.length > MAX_MESSAGE) return -1;
      d.bytes.copy(scratch, rdStart);
      end = rdStart + d.bytes.length;
      break;
    case 'name':
      end = w.write(d.name, rdStart);
      break;
    case 'soa': {
      end = w.write(d.mname, rdStart);
      if (end >= 0) end = w.write(d.rname, end);
      if (end < 0 || end + 20 > MAX_MESSAGE) return -1;
      for (const v of [d.serial, d.refresh, d.retry, d.expire, d.minimum]) {
        scratch.writeUInt32BE(v >>> 0, end);
        end += 4;
      }
      break;
    }
    default:
      return assertNever(d, 'record data');
  }
  if (end < 0) return -1;
  scratch.writeUInt16BE(end - rdStart, off + 8);
  return end;
}

/** Writes the OPT record tsnet sends: our payload size, the extended rcode's upper bits, DO echoed. */
function writeOpt(off: number, rcode: number, edns: Edns): number {
  scratch[off] = 0;
  scratch.writeUInt16BE(TYPE.OPT, off + 1);
  scratch.writeUInt16BE(ADVERTISED_UDP_SIZE, off + 3);
  scratch[off + 5] = rcode >> 4;
  scratch[off + 6] = 0;
  scratch.writeUInt16BE(edns.dnssecOk ? EDNS_DO : 0, off + 7);
  scratch.writeUInt16BE(0, off + 9);
  return off + 11;
}

const OPT_SIZE = 11;

function writeHeader(id: number, queryFlags: number, extra: number, rcode: number): void {
  scratch.writeUInt16BE(id, 0);
  scratch.writeUInt16BE(F_QR | (queryFlags & ECHOED) | extra | (rcode & 0xf), 2);
}

/**
 * A full reply to `query` (whose wire form is `msg`): the question copied byte for byte (the client's letter case
 * kept), the records with names compressed against the question, an OPT when the query had one. Records that do not
 * fit in 64 KiB are left off with TC set.
 */
export function encodeResponse(msg: Buffer, query: Query, body: ResponseBody): Buffer {
  const extra = (body.aa ? F_AA : 0) | (body.ra ? F_RA : 0);
  msg.copy(scratch, HEADER, HEADER, query.questionEnd);
  const w = new NameWriter();
  w.addQuestion(query.question.name === '' ? [] : query.question.name.split('.'), msg);
  const limit = MAX_MESSAGE - (query.edns ? OPT_SIZE : 0);
  let off = query.questionEnd;
  let tc = 0;
  const counts = [0, 0];
  const sections = [body.answers ?? [], body.authority ?? []];
  for (let s = 0; s < 2 && !tc; s++) {
    for (const rr of sections[s]) {
      const end = writeRecord(w, rr, off);
      if (end < 0 || end > limit) {
        tc = F_TC;
        break;
      }
      off = end;
      counts[s]++;
    }
  }
  writeHeader(query.id, query.flags, extra | tc, body.rcode);
  scratch.writeUInt16BE(1, 4);
  scratch.writeUInt16BE(counts[0], 6);
  scratch.writeUInt16BE(counts[1], 8);
  scratch.writeUInt16BE(query.edns ? 1 : 0, 10);
  if (query.edns) off = writeOpt(off, body.rcode, query.edns);
  return Buffer.from(scratch.subarray(0, off));
}

/** A reply with only an rcode (REFUSED, SERVFAIL) to a query that parsed. */
export function rcodeResponse(msg: Buffer, query: Query, rcode: number, ra: boolean): Buffer {
  return encodeResponse(msg, query, { rcode, aa: false, ra });
}

/** The reply a parse failure gets (FORMERR, NOTIMP, BADVERS), or null when the packet is dropped. */
export function failureResponse(msg: Buffer, f: ParseFailure): Buffer | null {
  if (f.error === 'drop' || f.id === undefined || f.flags === undefined) return null;
  const rcode = f.error === 'formerr' ? RCODE.FORMERR : f.error === 'notimp' ? RCODE.NOTIMP : RCODE.BADVERS;
  const qEnd = f.questionEnd ?? HEADER;
  msg.copy(scratch, HEADER, HEADER, qEnd);
  writeHeader(f.id, f.flags, 0, rcode);
  scratch.writeUInt16BE(qEnd > HEADER ? 1 : 0, 4);
  scratch.writeUInt32BE(0, 6);
  scratch.writeUInt16BE(f.edns ? 1 : 0, 10);
  const end = f.edns ? writeOpt(qEnd, rcode, f.edns) : qEnd;
  return Buffer.from(scratch.subarray(0, end));
}

/**
 * `response` cut to what always fits a UDP client: its header with TC set, the query's question and, when the
 * query had EDNS, an OPT (dns2 drops it here; RFC 6891 wants it). The rcode and AA/RA bits are kept.
 */
export function truncate(msg: Buffer, query: Query, response: Buffer): Buffer {
  const out = Buffer.alloc(query.questionEnd + (query.edns ? OPT_SIZE : 0));
  response.copy(out, 0, 0, 4);
  out.writeUInt16BE(query.id, 0);
  out.writeUInt16BE(out.readUInt16BE(2) | F_TC | F_QR, 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(query.edns ? 1 : 0, 10);
  msg.copy(out, HEADER, HEADER, query.questionEnd);
  if (query.edns) {
    const rcode = (out.readUInt16BE(2) & 0xf) | (responseExtendedRcode(response) << 4);
    writeOpt(query.questionEnd, rcode, query.edns);
    scratch.copy(out, query.questionEnd, query.questionEnd, query.questionEnd + OPT_SIZE);
  }
  return out;
}

/** The upper 8 bits of a response's extended rcode, from its OPT when it has one at the end (ours always do). */
function responseExtendedRcode(response: Buffer): number {
  const at = response.length - OPT_SIZE;
  if (at >= HEADER && response[at] === 0 && response.readUInt16BE(at + 1) === TYPE.OPT) return response[at + 5];
  return 0;
}

/**
 * The most a UDP reply to `query` may be: 512 without EDNS, else the smaller of the client's offer and tsnet's own
 * (1232, the size that crosses paths unfragmented): larger answers go over TCP, and a spoofed query never buys a
 * reply of up to 64 KiB.
 */
export function udpLimit(query: Query): number {
  return query.edns ? Math.min(query.edns.udpSize, ADVERTISED_UDP_SIZE) : CLASSIC_UDP_SIZE;
}

/** Copies a pre-encoded reply for a new query: the query's ID, echoed flags and question bytes (letter case). */
export function patchResponse(cached: Buffer, msg: Buffer, query: Query): Buffer {
  const out = Buffer.from(cached);
  out.writeUInt16BE(query.id, 0);
  out.writeUInt16BE((out.readUInt16BE(2) & ~ECHOED) | (query.flags & ECHOED), 2);
  msg.copy(out, HEADER, HEADER, query.questionEnd);
  return out;
}
