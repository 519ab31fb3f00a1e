import ipaddr from 'ipaddr.js';
import type { DefaultPoolSpec } from '../config';
import { type ErrorCode, tsnetError } from '../errors';
import { log } from '../log';

/** A parsed prefix in canonical form: host bits cleared, IPv4-mapped IPv6 prefixes (/96 and longer) as IPv4. */
export interface Cidr {
  readonly v6: boolean;
  /** The network address as an integer. */
  readonly network: bigint;
  readonly prefix: number;
  /** Canonical text, e.g. `172.28.0.0/16` or `fd00::/64`. */
  readonly text: string;
}

/** A parsed address in canonical form; IPv4-mapped IPv6 addresses come back as IPv4. */
export interface Ip {
  readonly v6: boolean;
  readonly value: bigint;
  /** Canonical text, e.g. `172.28.0.5` or `fd00::5`. */
  readonly text: string;
}

/** Offsets (relative to a pool's network address) of a closed range. */
export interface OffsetRange {
  readonly lo: bigint;
  readonly hi: bigint;
}

/** A validated default pool spec: `base` cut into consecutive pools of prefix length `size`. */
export interface DefaultPool {
  readonly base: Cidr;
  readonly size: number;
}

const PREFIX_RE = /^(0|[1-9][0-9]{0,2})$/;
const V4_MASK = 0xffffffffn;

function bitsOf(v6: boolean): number {
  return v6 ? 128 : 32;
}

/** ::ffff:0:0/96: its addresses are IPv4 addresses, never compared as IPv6. */
function isMapped(v6: boolean, value: bigint): boolean {
  return v6 && value >> 32n === 0xffffn;
}

/** Strict syntax: dotted quad without leading zeros, or IPv6 without zone id. Returns the raw family and value. */
function parseRaw(text: string): { v6: boolean; value: bigint } | undefined {
  let bytes: number[];
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) bytes = ipaddr.IPv4.parse(text).toByteArray();
  else if (!text.includes('%') && ipaddr.IPv6.isValid(text)) bytes = ipaddr.IPv6.parse(text).toByteArray();
  else return undefined;
  return { v6: bytes.length === 16, value: bytes.reduce((acc, b) => (acc << 8n) | BigInt(b), 0n) };
}

/** Canonical text of an address (RFC 5952 for IPv6). */
export function formatIp(v6: boolean, value: bigint): string {
  const bytes: number[] = [];
  for (let i = bitsOf(v6) / 8 - 1; i >= 0; i--) bytes.push(Number((value >> BigInt(i * 8)) & 0xffn));
  const addr = ipaddr.fromByteArray(bytes);
  return addr instanceof ipaddr.IPv6 ? addr.toRFC5952String() : addr.toString();
}

function makeIp(v6: boolean, value: bigint): Ip {
  return { v6, value, text: formatIp(v6, value) };
}

/** Builds the CIDR containing `value` with `prefix`, clearing host bits. */
export function makeCidr(v6: boolean, value: bigint, prefix: number): Cidr {
  const hostBits = BigInt(bitsOf(v6) - prefix);
  const network = (value >> hostBits) << hostBits;
  return { v6, network, prefix, text: `${formatIp(v6, network)}/${prefix}` };
}

/** Parses an address, or undefined when malformed. IPv4-mapped IPv6 becomes IPv4. */
export function tryParseIp(text: string): Ip | undefined {
  const raw = parseRaw(text);
  if (!raw) return undefined;
  return isMapped(raw.v6, raw.value) ? makeIp(false, raw.value & V4_MASK) : makeIp(raw.v6, raw.value);
}

/** Parses an address; throws `code` (TSN_INVALID_ADDRESS) naming `field` and the text when malformed. */
export function parseIp(field: string, text: string, code: ErrorCode = 'TSN_INVALID_ADDRESS'): Ip {
  const ip = tryParseIp(text);
  if (!ip) throw tsnetError(code, `${field} "${text}": not a valid IP address`);
  return ip;
}

/** Parses a CIDR, or undefined when malformed. Host bits are cleared (lenient like dockerd). */
export function tryParseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  const prefixText = text.slice(slash + 1);
  const raw = slash < 0 ? undefined : parseRaw(text.slice(0, slash));
  if (!raw || !PREFIX_RE.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > bitsOf(raw.v6)) return undefined;
  if (isMapped(raw.v6, raw.value) && prefix >= 96) return makeCidr(false, raw.value & V4_MASK, prefix - 96);
  return makeCidr(raw.v6, raw.value, prefix);
}

/** Parses a CIDR, clearing host bits; throws `code` (TSN_INVALID_ADDRESS) naming `field` and the text. */
export function parseCidr(field: string, text: string, code: ErrorCode = 'TSN_INVALID_ADDRESS'): Cidr {
  const cidr = tryParseCidr(text);
  if (!cidr) throw tsnetError(code, `${field} "${text}": not a valid CIDR`);
  return cidr;
}

const MAPPED_RANGE = makeCidr(true, 0xffffn << 32n, 96);

/**
 * Parses a CIDR usable as an IPAM pool: {@link parseCidr}, and an IPv6 pool must not overlap ::ffff:0:0/96, whose
 * addresses tsnet always treats as IPv4.
 */
export function parsePool(field: string, text: string, code: ErrorCode = 'TSN_INVALID_ADDRESS'): Cidr {
  const cidr = parseCidr(field, text, code);
  if (overlaps(cidr, MAPPED_RANGE)) {
    throw tsnetError(code, `${field} "${text}": overlaps the IPv4-mapped range ${MAPPED_RANGE.text}, use IPv4 instead`);
  }
  return cidr;
}

/** Number of addresses in `c`. */
export function cidrSize(c: Cidr): bigint {
  return 1n << BigInt(bitsOf(c.v6) - c.prefix);
}

/** The highest address of `c`, as an integer. */
export function cidrLast(c: Cidr): bigint {
  return c.network + cidrSize(c) - 1n;
}

/** Whether `a` and `b` share at least one address (never across families). */
export function overlaps(a: Cidr, b: Cidr): boolean {
  return a.v6 === b.v6 && a.network <= cidrLast(b) && b.network <= cidrLast(a);
}

/** Whether every address of `inner` is in `outer` (same family). */
export function contains(outer: Cidr, inner: Cidr): boolean {
  return outer.v6 === inner.v6 && outer.prefix <= inner.prefix && overlaps(outer, inner);
}

/** Offset of `ip` from the network address of `c`, or undefined when `ip` is not in `c`. */
export function offsetOf(c: Cidr, ip: Ip): bigint | undefined {
  if (ip.v6 !== c.v6 || ip.value < c.network || ip.value > cidrLast(c)) return undefined;
  return ip.value - c.network;
}

/** Canonical text of the address at `offset` in `c`. */
export function addressAt(c: Cidr, offset: bigint): string {
  return formatIp(c.v6, c.network + offset);
}

/**
 * Offsets a host may get: all but the network address (IPv4 below /31; IPv6 subnet-router anycast below /127) and
 * the IPv4 broadcast (below /31).
 */
export function hostRange(c: Cidr): OffsetRange {
  const last = cidrSize(c) - 1n;
  const pointToPoint = c.prefix >= bitsOf(c.v6) - 1;
  if (pointToPoint) return { lo: 0n, hi: last };
  return { lo: 1n, hi: c.v6 ? last : last - 1n };
}

/** What the reserved address at `offset` of `c` is, or undefined when a host may have it. */
export function reservedRole(c: Cidr, offset: bigint): string | undefined {
  const { lo, hi } = hostRange(c);
  if (offset < lo) return c.v6 ? 'the subnet-router anycast address' : 'the network address';
  if (offset > hi) return 'the broadcast address';
  return undefined;
}

/** Offsets dynamic allocation draws from: the host range of `pool`, narrowed to `sub` (the ip-range) if given. */
export function dynamicRange(pool: Cidr, sub: Cidr | undefined): OffsetRange {
  const host = hostRange(pool);
  if (!sub) return host;
  const subLo = sub.network - pool.network;
  const subHi = subLo + cidrSize(sub) - 1n;
  return { lo: subLo > host.lo ? subLo : host.lo, hi: subHi < host.hi ? subHi : host.hi };
}

/** Validates default pool specs of one family; bad ones throw TSN_INVALID_OPTION naming the spec. */
export function parseDefaultPools(specs: DefaultPoolSpec[], v6: boolean): DefaultPool[] {
  return specs.map(({ base, size }) => {
    const field = `default-address-pool${v6 ? '-v6' : ''} base`;
    const cidr = parsePool(field, base, 'TSN_INVALID_OPTION');
    if (cidr.v6 !== v6) throw tsnetError('TSN_INVALID_OPTION', `${field} "${base}": not an IPv${v6 ? 6 : 4} prefix`);
    if (!Number.isInteger(size) || size < cidr.prefix || size > bitsOf(v6)) {
      throw tsnetError(
        'TSN_INVALID_OPTION',
        `default-address-pool "${base}" size ${size}: must be between ${cidr.prefix} and ${bitsOf(v6)}`,
      );
    }
    return { base: cidr, size };
  });
}

/**
 * Host route destinations of one family that default pools must avoid, as CIDRs (a bare address is a host route);
 * default routes and junk are dropped.
 */
export function routeObstacles(routes: string[], v6: boolean): Cidr[] {
  const out: Cidr[] = [];
  for (const route of routes) {
    const ip = route.includes('/') ? undefined : tryParseIp(route);
    const cidr = ip ? makeCidr(ip.v6, ip.value, bitsOf(ip.v6)) : tryParseCidr(route);
    if (!cidr) log.debug('ipam: ignoring unparsable host route', { route });
    else if (cidr.v6 === v6 && cidr.prefix > 0) out.push(cidr);
  }
  return out;
}

/** The first pool, in spec order, that overlaps none of `obstacles`; undefined when all are taken. */
export function pickDefaultPool(defaults: DefaultPool[], obstacles: Cidr[]): Cidr | undefined {
  for (const spec of defaults) {
    const found = firstFreeBlock(spec, obstacles);
    if (found) return found;
  }
  return undefined;
}

/**
 * Walks the blocks of one spec, jumping past the furthest obstacle that blocks the current candidate. Every jump
 * leaves one obstacle behind for good, so this takes at most obstacles + 1 steps even for a /48 cut into /64s.
 */
function firstFreeBlock({ base, size }: DefaultPool, obstacles: Cidr[]): Cidr | undefined {
  const step = 1n << BigInt(bitsOf(base.v6) - size);
  const last = cidrLast(base);
  const relevant = obstacles.filter((o) => overlaps(o, base));
  for (let start = base.network; start <= last; ) {
    const candidate = makeCidr(base.v6, start, size);
    let blockedUntil: bigint | undefined;
    for (const o of relevant) {
      const end = cidrLast(o);
      if (overlaps(o, candidate) && (blockedUntil === undefined || end > blockedUntil)) blockedUntil = end;
    }
    if (blockedUntil === undefined) return candidate;
    start = base.network + ((blockedUntil + 1n - base.network + step - 1n) / step) * step;
  }
  return undefined;
}

/** The first of `pools` (CIDR texts) holding the address of `cidrOrAddr` ("a.b.c.d/len" or plain), or undefined. */
export function subnetOf(cidrOrAddr: string, pools: string[]): string | undefined {
  const ip = tryParseIp(cidrOrAddr.split('/')[0]!);
  if (!ip) return undefined;
  return pools.find((p) => {
    const c = tryParseCidr(p);
    return c !== undefined && offsetOf(c, ip) !== undefined;
  });
}
