import type { DefaultPoolSpec } from '../config';
import { type ErrorCode, tsnetError } from '../errors';
import { log } from '../log';
import { bitsOf, type Cidr, cidrLast, cidrSize, makeCidr, overlaps, parseCidr, specialUseOverlap, tryParseCidr, tryParseIp } from '../netaddr';

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

/**
 * Parses a CIDR usable as an IPAM pool: {@link parseCidr}, and no special-use range (loopback, link-local,
 * multicast, the IPv4-mapped range tsnet treats as IPv4, ...; see specialUseOverlap) may overlap it.
 */
export function parsePool(field: string, text: string, code: ErrorCode = 'TSN_INVALID_ADDRESS'): Cidr {
  const cidr = parseCidr(field, text, code);
  const special = specialUseOverlap(cidr);
  if (special) throw tsnetError(code, `${field} "${text}": ${special}, which cannot be a pool`);
  return cidr;
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
