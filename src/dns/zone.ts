/**
 * tsnet's names as an immutable lookup structure, built anew from the containers and networks whenever either
 * changes (the resolver swaps it in whole, so a query never sees half an update).
 */

import type { ContainerInfo } from '../docker/contract';
import { excerpt, logSafely } from '../log';
import { addressOf, type Cidr, offsetOf, tryParseCidr, tryParseIp } from '../netaddr';
import type { DnsNetwork, Question, QueryContext } from './contract';
import { CLASS_IN, RCODE, type ResourceRecord, TYPE } from './wire';

export interface ZoneInput {
  /** Lower-case, no trailing dot (DnsConfig.zone). */
  zone: string;
  ttl: number;
  networks: readonly DnsNetwork[];
  containers: readonly ContainerInfo[];
  /** SOA serial; the caller's clock (seconds), so a secondary sees the zone change. */
  serial: number;
}

/** What the zone says about a question: an answer of its own, or not tsnet's name (forward or refuse). */
export type ZoneAnswer =
  | { kind: 'not-mine' }
  | {
      kind: 'local';
      rcode: number;
      answers: readonly ResourceRecord[];
      authority: readonly ResourceRecord[];
      /** Several addresses: the resolver rotates `answers` per query (round robin). */
      rotate: boolean;
    };

export interface Zone {
  readonly zone: string;
  lookup(q: Question, ctx: Pick<QueryContext, 'networkId' | 'localAddress'>): ZoneAnswer;
}

interface Addrs {
  a: ResourceRecord[];
  aaaa: ResourceRecord[];
}

interface NameEntry {
  all: Addrs;
  /** The same addresses per network, for a bare NAME asked on a network's listener. */
  byNetwork: Map<string, Addrs>;
}

interface ReverseSubnet {
  cidr: Cidr;
  /** The SOA negative answers under this subnet carry (owner: the enclosing octet/nibble reverse zone). */
  soa: ResourceRecord;
}

const NOT_MINE: ZoneAnswer = { kind: 'not-mine' };
/** LDH plus `_` (compose v1 names such as `proj_web_1`), 1–63 characters, no leading or trailing hyphen. */
const LABEL_RE = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
const MAX_NAME = 253;
const IN_ADDR = 'in-addr.arpa';
const IP6 = 'ip6.arpa';

function validLabel(text: string): string | undefined {
  const l = text.toLowerCase();
  if (LABEL_RE.test(l)) return l;
  logSafely('debug', 'dns: name skipped, not a DNS label', { name: excerpt(text) });
  return undefined;
}

/** The reverse name of an address, without the trailing dot, or undefined when it does not parse. */
function reverseName(address: string): string | undefined {
  const ip = tryParseIp(address);
  if (!ip) return undefined;
  if (!ip.v6) return `${ip.text.split('.').reverse().join('.')}.${IN_ADDR}`;
  return `${ip.value.toString(16).padStart(32, '0').split('').reverse().join('.')}.${IP6}`;
}

/** The address a full reverse name stands for (canonical text), or undefined for partial or malformed names. */
function addressOfReverse(name: string): string | undefined {
  const labels = name.split('.');
  if (name.endsWith('.' + IN_ADDR) && labels.length === 6) {
    const octets = labels.slice(0, 4).reverse();
    if (!octets.every((o) => /^(0|[1-9][0-9]{0,2})$/.test(o))) return undefined;
    return tryParseIp(octets.join('.'))?.text;
  }
  if (name.endsWith('.' + IP6) && labels.length === 34) {
    const nibbles = labels.slice(0, 32).reverse();
    if (!nibbles.every((n) => /^[0-9a-f]$/.test(n))) return undefined;
    const groups = Array.from({ length: 8 }, (_, i) => nibbles.slice(i * 4, i * 4 + 4).join(''));
    return tryParseIp(groups.join(':'))?.text;
  }
  return undefined;
}

/** The reverse zone a subnet's PTR names sit in: its network address cut to whole octets (IPv4) or nibbles. */
function reverseZoneOf(cidr: Cidr): string {
  if (!cidr.v6) {
    const octets = Math.floor(cidr.prefix / 8);
    const parts = addressOf(cidr.text).split('.').slice(0, octets).reverse();
    return [...parts, IN_ADDR].join('.');
  }
  const nibbles = Math.floor(cidr.prefix / 4);
  const hex = cidr.network.toString(16).padStart(32, '0').slice(0, nibbles);
  return [...hex.split('').reverse(), IP6].join('.');
}

function addrBytes(address: string): Buffer | undefined {
  const ip = tryParseIp(address);
  if (!ip) return undefined;
  return Buffer.from(ip.value.toString(16).padStart(ip.v6 ? 32 : 8, '0'), 'hex');
}

export function buildZone(input: ZoneInput): Zone {
  const { zone, ttl } = input;
  const zoneLabels = zone.split('.');
  const soaData = {
    kind: 'soa' as const,
    mname: ['ns', ...zoneLabels],
    rname: ['hostmaster', ...zoneLabels],
    serial: input.serial,
    refresh: 3600,
    retry: 600,
    expire: 86400,
    minimum: ttl,
  };
  const soaAt = (owner: string): ResourceRecord => ({ owner: owner.split('.'), type: TYPE.SOA, ttl, data: soaData });
  const soa = soaAt(zone);
  const nsRecord: ResourceRecord = { owner: zoneLabels, type: TYPE.NS, ttl, data: { kind: 'name', name: soaData.mname } };
  const nsName = `ns.${zone}`;

  const networks = new Map(input.networks.map((n) => [n.id, n]));
  const names = new Map<string, NameEntry>();
  /** Names that exist only because names sit below them (`NETWORK.ZONE`): NODATA, not NXDOMAIN (RFC 8020). */
  const nonTerminals = new Set<string>();
  const ptrs = new Map<string, ResourceRecord[]>();
  const seen = new Set<string>();

  const addAddress = (name: string, networkId: string, rr: Omit<ResourceRecord, 'owner'>, dedupe: string): void => {
    if (name.length > MAX_NAME || seen.has(`${name}|${dedupe}`)) return;
    seen.add(`${name}|${dedupe}`);
    let entry = names.get(name);
    if (!entry) names.set(name, (entry = { all: { a: [], aaaa: [] }, byNetwork: new Map() }));
    let perNet = entry.byNetwork.get(networkId);
    if (!perNet) entry.byNetwork.set(networkId, (perNet = { a: [], aaaa: [] }));
    const record = { ...rr, owner: name.split('.') };
    const key = rr.type === TYPE.A ? 'a' : 'aaaa';
    entry.all[key].push(record);
    perNet[key].push(record);
  };

  for (const c of input.containers) {
    for (const cn of c.networks) {
      if (!networks.has(cn.networkId)) continue;
      const own = [c.name, c.hostname, ...cn.aliases].map(validLabel).filter((l): l is string => l !== undefined);
      const netLabel = validLabel(cn.networkName);
      const records: Array<Omit<ResourceRecord, 'owner'>> = [];
      for (const [addr, type] of [
        [cn.ipv4, TYPE.A],
        [cn.ipv6, TYPE.AAAA],
      ] as const) {
        if (addr === undefined) continue;
        const bytes = addrBytes(addr);
        if (!bytes) continue;
        records.push({ type, ttl, data: { kind: 'bytes', bytes } });
        const ptrOwner = reverseName(addr);
        const containerLabel = own.length > 0 && own[0] === c.name.toLowerCase() ? own[0] : undefined;
        if (ptrOwner && containerLabel && netLabel) {
          const list = ptrs.get(ptrOwner) ?? [];
          list.push({ owner: ptrOwner.split('.'), type: TYPE.PTR, ttl, data: { kind: 'name', name: [containerLabel, netLabel, ...zoneLabels] } });
          ptrs.set(ptrOwner, list);
        }
      }
      for (const n of new Set(own)) {
        const forms = [n, `${n}.${zone}`];
        if (netLabel) forms.push(`${n}.${netLabel}`, `${n}.${netLabel}.${zone}`);
        for (const form of forms) for (const rr of records) addAddress(form, cn.networkId, rr, `${c.id}|${cn.networkId}|${rr.type}`);
      }
      if (netLabel) nonTerminals.add(`${netLabel}.${zone}`);
    }
  }

  const subnets: ReverseSubnet[] = [];
  for (const n of input.networks) {
    for (const s of n.subnets) {
      const cidr = tryParseCidr(s);
      if (cidr) subnets.push({ cidr, soa: soaAt(reverseZoneOf(cidr)) });
    }
  }

  const local = (rcode: number, answers: readonly ResourceRecord[], authority: readonly ResourceRecord[] = []): ZoneAnswer => ({
    kind: 'local',
    rcode,
    answers,
    authority,
    rotate: answers.length > 1,
  });
  const nodata = (neg: ResourceRecord): ZoneAnswer => local(RCODE.NOERROR, [], [neg]);
  const isTransfer = (t: number) => t === TYPE.AXFR || t === TYPE.IXFR;

  function addresses(entry: NameEntry, type: number, networkId: string | undefined): ResourceRecord[] {
    const set = (networkId !== undefined && entry.byNetwork.get(networkId)) || entry.all;
    if (type === TYPE.A) return set.a;
    if (type === TYPE.AAAA) return set.aaaa;
    return type === TYPE.ANY ? [...set.a, ...set.aaaa] : [];
  }

  function lookupReverse(q: Question): ZoneAnswer {
    const address = addressOfReverse(q.name);
    const ip = address === undefined ? undefined : tryParseIp(address);
    if (!ip) return NOT_MINE;
    const ptr = ptrs.get(q.name);
    const subnet = subnets.find((s) => offsetOf(s.cidr, ip) !== undefined);
    if (ptr) {
      if (q.type === TYPE.PTR || q.type === TYPE.ANY) return local(RCODE.NOERROR, ptr);
      return nodata(subnet?.soa ?? soa);
    }
    return subnet ? local(RCODE.NXDOMAIN, [], [subnet.soa]) : NOT_MINE;
  }

  return {
    zone,
    lookup(q, ctx) {
      if (q.class !== CLASS_IN) return NOT_MINE;
      const inZone = q.name === zone || q.name.endsWith('.' + zone);
      if (inZone && isTransfer(q.type)) return local(RCODE.REFUSED, []);
      if (q.name === zone) {
        if (q.type === TYPE.SOA) return local(RCODE.NOERROR, [soa]);
        if (q.type === TYPE.NS) return local(RCODE.NOERROR, [nsRecord]);
        if (q.type === TYPE.ANY) return local(RCODE.NOERROR, [soa, nsRecord]);
        return nodata(soa);
      }
      if (q.name === nsName) {
        const bytes = addrBytes(ctx.localAddress);
        const type = bytes?.length === 16 ? TYPE.AAAA : TYPE.A;
        const unspecified = !bytes || bytes.every((b) => b === 0);
        if (!unspecified && (q.type === type || q.type === TYPE.ANY)) {
          return local(RCODE.NOERROR, [{ owner: nsName.split('.'), type, ttl, data: { kind: 'bytes', bytes } }]);
        }
        return nodata(soa);
      }
      const entry = names.get(q.name);
      if (entry) {
        const answers = addresses(entry, q.type, ctx.networkId);
        return answers.length > 0 ? local(RCODE.NOERROR, answers) : nodata(soa);
      }
      if (inZone) return nonTerminals.has(q.name) ? nodata(soa) : local(RCODE.NXDOMAIN, [], [soa]);
      return lookupReverse(q);
    },
  };
}
