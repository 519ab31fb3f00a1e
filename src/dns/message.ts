/**
 * Walks a DNS response from outside (an upstream's reply) far enough to check it, cache it and count its TTLs down:
 * header, question, and every resource record's offsets. Every read is bounds-checked and names follow at most
 * {@link MAX_POINTERS} compression pointers, so a hostile packet (pointer loops, lengths past the end) yields
 * `undefined`, never a throw or a long loop.
 */

import { F_QR, HEADER } from './wire';

/** A name of 255 octets has at most 127 labels; more pointers than that can only be a loop. */
const MAX_POINTERS = 127;
const MAX_NAME = 255;

export type Section = 'answer' | 'authority' | 'additional';

export interface WalkedRR {
  section: Section;
  type: number;
  ttl: number;
  /** Offset of the 32-bit TTL field (the one a cache rewrites). */
  ttlOffset: number;
  rdataOffset: number;
  rdLength: number;
}

export interface WalkedMessage {
  id: number;
  flags: number;
  rcode: number;
  /** Offset just after the question section (12 when QDCOUNT is 0). */
  questionEnd: number;
  rrs: WalkedRR[];
}

/** Where the (possibly compressed) name at `offset` ends in place; undefined when it is malformed or loops. */
export function skipName(msg: Buffer, offset: number): number | undefined {
  let pos = offset;
  let end = -1;
  let length = 1;
  for (let pointers = 0; ; ) {
    if (pos >= msg.length) return undefined;
    const len = msg[pos];
    if (len === 0) return end < 0 ? pos + 1 : end;
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= msg.length || ++pointers > MAX_POINTERS) return undefined;
      if (end < 0) end = pos + 2;
      pos = ((len & 0x3f) << 8) | msg[pos + 1];
      continue;
    }
    // 0x40 and 0x80 are the obsolete extended label types (RFC 6891 §5): nobody sends them.
    if ((len & 0xc0) !== 0 || pos + 1 + len > msg.length) return undefined;
    length += len + 1;
    if (length > MAX_NAME) return undefined;
    pos += 1 + len;
  }
}

/** The whole response: header, at most one question, every RR; undefined if any part is malformed or bytes trail it. */
export function walkMessage(msg: Buffer): WalkedMessage | undefined {
  if (msg.length < HEADER) return undefined;
  const qdcount = msg.readUInt16BE(4);
  if (qdcount > 1) return undefined;
  let pos = HEADER;
  if (qdcount === 1) {
    const qEnd = skipName(msg, pos);
    if (qEnd === undefined || qEnd + 4 > msg.length) return undefined;
    pos = qEnd + 4;
  }
  const flags = msg.readUInt16BE(2);
  const walked: WalkedMessage = { id: msg.readUInt16BE(0), flags, rcode: flags & 0xf, questionEnd: pos, rrs: [] };
  const counts: [Section, number][] = [
    ['answer', msg.readUInt16BE(6)],
    ['authority', msg.readUInt16BE(8)],
    ['additional', msg.readUInt16BE(10)],
  ];
  for (const [section, count] of counts) {
    for (let i = 0; i < count; i++) {
      const at = skipName(msg, pos);
      if (at === undefined || at + 10 > msg.length) return undefined;
      const rdLength = msg.readUInt16BE(at + 8);
      if (at + 10 + rdLength > msg.length) return undefined;
      walked.rrs.push({ section, type: msg.readUInt16BE(at), ttl: msg.readUInt32BE(at + 4), ttlOffset: at + 4, rdataOffset: at + 10, rdLength });
      pos = at + 10 + rdLength;
    }
  }
  return pos === msg.length ? walked : undefined;
}

/** The MINIMUM field of an SOA record's RDATA (RFC 1035 §3.3.13), or undefined when the RDATA is malformed. */
export function soaMinimum(msg: Buffer, rr: WalkedRR): number | undefined {
  const stop = rr.rdataOffset + rr.rdLength;
  const mnameEnd = skipName(msg, rr.rdataOffset);
  const rnameEnd = mnameEnd !== undefined && mnameEnd < stop ? skipName(msg, mnameEnd) : undefined;
  // MINIMUM is the last of the five 32-bit fields after the two names.
  return rnameEnd !== undefined && rnameEnd + 20 === stop ? msg.readUInt32BE(rnameEnd + 16) : undefined;
}

/**
 * Whether `reply` is a response carrying exactly the question of `query` (its bytes `[12, questionEnd)`), letters
 * compared without case: part of accepting a reply only for the query it answers.
 */
export function answersQuestion(reply: Buffer, query: Buffer, questionEnd: number): boolean {
  if (reply.length < questionEnd || (reply.readUInt16BE(2) & F_QR) === 0 || reply.readUInt16BE(4) !== 1) return false;
  for (let i = HEADER; i < questionEnd; i++) {
    if (asciiLower(reply[i]) !== asciiLower(query[i])) return false;
  }
  return true;
}

function asciiLower(c: number): number {
  return c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
}
