/**
 * A small cache of upstream replies: positive answers for the smallest TTL of their answer records, negative ones
 * (NXDOMAIN, NODATA) for the SOA's negative TTL (RFC 2308 §5), each capped; served with every TTL counted down.
 * Bounded in entries and in bytes (least recently used goes first) and driven by an injected clock.
 */

import type { Query } from './contract';
import { soaMinimum, type WalkedMessage } from './message';
import { F_TC, RCODE, TYPE } from './wire';

export interface CacheOptions {
  /** Milliseconds; `Date.now` unless a test injects its clock. */
  now?: () => number;
  maxEntries?: number;
  /** Cap on the replies' bytes together: the names are the clients' choice, and one reply can be 64 KiB. */
  maxBytes?: number;
  /** Cap of a positive answer's lifetime, seconds. */
  maxTtl?: number;
  /** Cap of a negative answer's lifetime, seconds. */
  maxNegativeTtl?: number;
}

interface Entry {
  reply: Buffer;
  /** Offsets of the TTL fields to count down, and their values when stored. */
  ttlOffsets: number[];
  ttls: number[];
  storedAt: number;
  expiresAt: number;
}

export const DEFAULT_CACHE_ENTRIES = 10_000;
export const DEFAULT_CACHE_BYTES = 16 * 1024 * 1024;
const DEFAULT_MAX_TTL = 3600;
const DEFAULT_MAX_NEGATIVE_TTL = 300;

/**
 * The key of a query: its question (lower-cased name, type, class) and what its EDNS asks for (none, EDNS, EDNS with
 * DO), since an upstream answers those differently (OPT record, DNSSEC records).
 */
export function cacheKey(query: Query): string {
  const q = query.question;
  const edns = query.edns ? (query.edns.dnssecOk ? 'do' : 'e') : '-';
  return `${q.type}/${q.class}/${edns}/${q.name}`;
}

export class DnsCache {
  private readonly entries = new Map<string, Entry>();
  private readonly now: () => number;
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private bytes = 0;
  private readonly maxTtl: number;
  private readonly maxNegativeTtl: number;

  constructor(opts: CacheOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.maxEntries = opts.maxEntries ?? DEFAULT_CACHE_ENTRIES;
    this.maxBytes = opts.maxBytes ?? DEFAULT_CACHE_BYTES;
    this.maxTtl = opts.maxTtl ?? DEFAULT_MAX_TTL;
    this.maxNegativeTtl = opts.maxNegativeTtl ?? DEFAULT_MAX_NEGATIVE_TTL;
  }

  get size(): number {
    return this.entries.size;
  }

  /** A fresh copy of the cached reply with its TTLs counted down (its ID as stored), or undefined when expired. */
  get(key: string): Buffer | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    const now = this.now();
    if (now >= e.expiresAt) {
      this.remove(key, e);
      return undefined;
    }
    // Most recently used last: Map keeps insertion order.
    this.entries.delete(key);
    this.entries.set(key, e);
    const out = Buffer.from(e.reply);
    const elapsed = Math.floor((now - e.storedAt) / 1000);
    for (let i = 0; i < e.ttlOffsets.length; i++) out.writeUInt32BE(Math.max(0, e.ttls[i] - elapsed), e.ttlOffsets[i]);
    return out;
  }

  /** Stores `reply` (already walked) if it is cacheable; returns whether it was. */
  put(key: string, reply: Buffer, walked: WalkedMessage): boolean {
    const ttl = cacheLifetime(reply, walked, this.maxTtl, this.maxNegativeTtl);
    if (ttl <= 0 || reply.length > this.maxBytes) return false;
    const counted = walked.rrs.filter((rr) => rr.type !== TYPE.OPT);
    const now = this.now();
    const old = this.entries.get(key);
    if (old) this.remove(key, old);
    this.bytes += reply.length;
    this.entries.set(key, {
      reply: Buffer.from(reply),
      ttlOffsets: counted.map((rr) => rr.ttlOffset),
      ttls: counted.map((rr) => rr.ttl),
      storedAt: now,
      expiresAt: now + ttl * 1000,
    });
    for (const [oldest, e] of this.entries) {
      if (this.entries.size <= this.maxEntries && this.bytes <= this.maxBytes) break;
      this.remove(oldest, e);
    }
    return true;
  }

  clear(): void {
    this.entries.clear();
    this.bytes = 0;
  }

  private remove(key: string, e: Entry): void {
    this.entries.delete(key);
    this.bytes -= e.reply.length;
  }
}

/**
 * Seconds a reply may be served from the cache; 0 for replies that must not be: truncated ones, any RCODE but
 * NOERROR and NXDOMAIN, and negative ones without an SOA to take the negative TTL from.
 */
function cacheLifetime(reply: Buffer, walked: WalkedMessage, maxTtl: number, maxNegativeTtl: number): number {
  if ((walked.flags & F_TC) !== 0) return 0;
  if (walked.rcode !== RCODE.NOERROR && walked.rcode !== RCODE.NXDOMAIN) return 0;
  const answers = walked.rrs.filter((rr) => rr.section === 'answer');
  if (walked.rcode === RCODE.NOERROR && answers.length > 0) return Math.min(maxTtl, ...answers.map((rr) => rr.ttl));
  const soa = walked.rrs.find((rr) => rr.section === 'authority' && rr.type === TYPE.SOA);
  const minimum = soa && soaMinimum(reply, soa);
  if (!soa || minimum === undefined) return 0;
  return Math.min(maxNegativeTtl, soa.ttl, minimum);
}
