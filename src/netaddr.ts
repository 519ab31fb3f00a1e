import { randomBytes } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import { type ErrorCode, tsnetError } from './errors';

/**
 * Address and CIDR math shared by every room: parsing to canonical values, rendering, containment. Policy (which
 * pools to hand out, which addresses of a pool are reserved) lives with its users.
 */

/** A parsed prefix in canonical form: host bits cleared, IPv4-mapped IPv6 prefixes (/96 and longer) as IPv4. */
export interface Cidr {
  readonly v6: boolean;
  /** The network address as an integer. */
  readonly network: bigint;
  readonly prefix: number;
  /** Canonical text, e.g. `172.28.0.0/16` or `fd00::/64`. */
  readonly text: string;
}

/** A parsed address in canonical form; IPv4-mapped IPv6 addresses come back as IPv4 (see {@link tryParseIp}). */
export interface Ip {
  readonly v6: boolean;
  readonly value: bigint;
  /** Canonical text, e.g. `172.28.0.5` or `fd00::5`. */
  readonly text: string;
}

/** An interface address: an address with the prefix length of its subnet (`172.28.5.254/16`), host bits kept. */
export interface IfAddr {
  readonly ip: Ip;
  readonly prefix: number;
  /** Canonical text, e.g. `172.28.5.254/16`. */
  readonly text: string;
}

const PREFIX_RE = /^(0|[1-9][0-9]{0,2})$/;
const V4_MASK = 0xffffffffn;

/** Address width of a family: 32 or 128. */
export function bitsOf(v6: boolean): number {
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
function formatIp(v6: boolean, value: bigint): string {
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

/**
 * An address's canonical text (see {@link tryParseIp}), as sockets and configs spell it in many ways. An IPv6 zone id
 * (`fe80::1%eth0`) is dropped, or kept as written with `keepZone`; text that is no address comes back as given.
 */
export function canonicalAddress(text: string, keepZone = false): string {
  const at = text.indexOf('%');
  const plain = at < 0 ? text : text.slice(0, at);
  const canonical = tryParseIp(plain)?.text ?? plain;
  return keepZone && at >= 0 ? canonical + text.slice(at) : canonical;
}

/** Parses an address; throws `code` (TSN_INVALID_ADDRESS) naming `field` and the text when malformed. */
export function parseIp(field: string, text: string, code: ErrorCode = 'TSN_INVALID_ADDRESS'): Ip {
  const ip = tryParseIp(text);
  if (!ip) throw tsnetError(code, `${field} "${text}": not a valid IP address`);
  return ip;
}

/**
 * Parses `address/prefix` exactly as written: no folding of IPv4-mapped IPv6 (callers refuse it where a family is
 * expected, see {@link isIPv4Mapped}), host bits kept. Undefined when malformed or the prefix is too long.
 */
export function tryParseIfAddr(text: string): IfAddr | undefined {
  const slash = text.indexOf('/');
  const prefixText = text.slice(slash + 1);
  const raw = slash < 0 ? undefined : parseRaw(text.slice(0, slash));
  if (!raw || !PREFIX_RE.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > bitsOf(raw.v6)) return undefined;
  const ip = makeIp(raw.v6, raw.value);
  return { ip, prefix, text: `${ip.text}/${prefix}` };
}

/** Whether an exactly parsed address is IPv6 in form but IPv4 in meaning (`::ffff:a.b.c.d`). */
export function isIPv4Mapped(ip: Ip): boolean {
  return isMapped(ip.v6, ip.value);
}

/** Parses a CIDR, or undefined when malformed. Host bits are cleared (lenient like dockerd). */
export function tryParseCidr(text: string): Cidr | undefined {
  const a = tryParseIfAddr(text);
  if (!a) return undefined;
  if (isMapped(a.ip.v6, a.ip.value) && a.prefix >= 96) return makeCidr(false, a.ip.value & V4_MASK, a.prefix - 96);
  return makeCidr(a.ip.v6, a.ip.value, a.prefix);
}

/** Parses a CIDR, clearing host bits; throws `code` (TSN_INVALID_ADDRESS) naming `field` and the text. */
export function parseCidr(field: string, text: string, code: ErrorCode = 'TSN_INVALID_ADDRESS'): Cidr {
  const cidr = tryParseCidr(text);
  if (!cidr) throw tsnetError(code, `${field} "${text}": not a valid CIDR`);
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

/** Whether `a` is an address of `pool` written with the pool's own prefix length (an address on that subnet). */
export function onSubnet(pool: Cidr, a: IfAddr): boolean {
  return a.prefix === pool.prefix && offsetOf(pool, a.ip) !== undefined;
}

/** Canonical text of the address at `offset` in `c`. */
export function addressAt(c: Cidr, offset: bigint): string {
  return formatIp(c.v6, c.network + offset);
}

/** The first of `pools` (CIDR texts) holding the address of `cidrOrAddr` ("a.b.c.d/len" or plain), or undefined. */
export function subnetOf(cidrOrAddr: string, pools: string[]): string | undefined {
  const ip = tryParseIp(addressOf(cidrOrAddr));
  if (!ip) return undefined;
  return pools.find((p) => {
    const c = tryParseCidr(p);
    return c !== undefined && offsetOf(c, ip) !== undefined;
  });
}

/**
 * Special-use ranges (RFC 6890) no subnet may overlap: their addresses mean something to every host (this host,
 * loopback, link-local, multicast, broadcast; for IPv6 also the IPv4-mapped range tsnet treats as IPv4), so a
 * bridge carrying them would capture or break the host's own traffic. Default routes (/0) overlap them too.
 */
const SPECIAL_USE: ReadonlyArray<{ range: Cidr; what: string }> = [
  { text: '0.0.0.0/8', what: 'IPv4 "this network"' },
  { text: '127.0.0.0/8', what: 'IPv4 loopback' },
  { text: '169.254.0.0/16', what: 'IPv4 link-local' },
  { text: '224.0.0.0/4', what: 'IPv4 multicast' },
  { text: '255.255.255.255/32', what: 'IPv4 limited broadcast' },
  { text: '::/8', what: 'IPv6 unspecified, loopback and IPv4-mapped' },
  { text: 'fe80::/10', what: 'IPv6 link-local' },
  { text: 'ff00::/8', what: 'IPv6 multicast' },
].map(({ text, what }) => ({ range: parseCidr('special-use range', text), what }));

/** Why `c` cannot be a subnet (`overlaps 127.0.0.0/8, IPv4 loopback`), or undefined when it can. */
export function specialUseOverlap(c: Cidr): string | undefined {
  const hit = SPECIAL_USE.find((s) => overlaps(s.range, c));
  return hit && `overlaps ${hit.range.text}, the ${hit.what} range`;
}

/** A random locally administered unicast MAC (02:xx:...), as the kernel would pick for a new link. */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b.readUInt8(0) & 0xfc) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** The address part of a CIDR ("172.28.5.1/16" → "172.28.5.1"). */
export function addressOf(cidr: string): string {
  const slash = cidr.indexOf('/');
  return slash < 0 ? cidr : cidr.slice(0, slash);
}

/**
 * Docker's MAC for an IPv4 endpoint: 02:42 followed by the address. The same address always gets the same MAC, so a
 * container that takes over an address (restart, redeploy) is not cut off by neighbours' stale ARP entries.
 */
export function macForIPv4(cidrOrAddr: string): string {
  const octets = addressOf(cidrOrAddr).split('.').map(Number);
  return ['02', '42', ...octets.map((o) => o.toString(16).padStart(2, '0'))].join(':');
}
