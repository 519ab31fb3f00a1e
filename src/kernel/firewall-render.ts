import type { FwElements, FwFamily, FwHost, FwNetwork, FwPort, FwSetName, FwWant } from './contract';
import { safeToken } from './tokens';

/**
 * tsnet's nftables ruleset, rendered from data. The chains are static and refer only to sets and maps; a network or
 * a published port is a few elements added or deleted in one transaction. Nothing is ever rewritten per port (the
 * cost that makes Docker's nft backend O(ports × rules), moby#53466).
 */

/** Default table name (`inet tsnet`); `--nft-table` gives a second tsnet on one host (tests, benches) its own. */
export const DEFAULT_TABLE = 'tsnet';

type Op = 'add' | 'delete';

/** Sets and maps of the table; the element types are what the chains look up. */
const SETS: Array<[name: FwSetName, spec: string]> = [
  ['bridges', 'type ifname;'],
  ['pairs', 'type ifname . ifname;'],
  ['noicc', 'type ifname;'],
  ['internal', 'type ifname;'],
  ['masq', 'type ifname;'],
  // Docker's own bridges (docker0, br-<12 hex>) as read from the host's links: nft cannot match a name pattern
  // exactly, and a glob like "br-*" would also cut non-Docker uplinks such as br-lan.
  ['dockerbr', 'type ifname;'],
  // Families whose forwarding tsnet turned on: forwarding that involves no tsnet or Docker bridge is dropped there.
  ['fwdguard', 'type nf_proto;'],
];
const MAPS: Array<[name: FwSetName, spec: string]> = [
  ['dnat4', 'type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service;'],
  ['dnat4any', 'type inet_proto . inet_service : ipv4_addr . inet_service;'],
  ['dnat6', 'type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service;'],
  ['dnat6any', 'type inet_proto . inet_service : ipv6_addr . inet_service;'],
];


function markHex(mark: number): string {
  return `0x${mark.toString(16).padStart(8, '0')}`;
}

const DNAT_RULES = [
  'meta nfproto ipv4 fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @dnat4',
  'meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @dnat4any',
  'meta nfproto ipv6 fib daddr type local dnat ip6 to ip6 daddr . meta l4proto . th dport map @dnat6',
  'meta nfproto ipv6 fib daddr type local dnat ip6 to meta l4proto . th dport map @dnat6any',
];

/** A base chain of the inet table: its hook, and the rules it holds (always these, in this order). */
interface BaseChain {
  name: string;
  type: 'nat' | 'filter';
  hook: string;
  priority: string;
  rules: string[];
}

function baseChains(mark: number): BaseChain[] {
  const accept = `meta mark set meta mark or ${markHex(mark)} accept`;
  return [
    // Published ports: traffic to a host address (or the one bound) on a published port goes to the container.
    { name: 'prerouting', type: 'nat', hook: 'prerouting', priority: 'dstnat', rules: DNAT_RULES },
    { name: 'output', type: 'nat', hook: 'output', priority: '-100', rules: DNAT_RULES },
    {
      name: 'postrouting',
      type: 'nat',
      hook: 'postrouting',
      priority: 'srcnat',
      rules: [
        // Outbound NAT: what a network sends out of the host leaves with the host's address. Keyed by bridge, not
        // by subnet, so networks with equal or overlapping subnets (other IPAMs) never collide in a set.
        'iifname @masq oifname != @bridges masquerade',
        // Hairpin: a container reaching a published port of its own network through a host address must see the
        // reply come back from that address, so the connection is masqueraded behind the gateway.
        'ct status dnat iifname . oifname @pairs masquerade',
        // Published on 127.0.0.1 (route_localnet on the bridge): a loopback source cannot be routed to a container.
        'ip saddr 127.0.0.0/8 oifname @bridges masquerade',
      ],
    },
    {
      name: 'localnet',
      type: 'filter',
      hook: 'prerouting',
      priority: 'raw',
      // Before DNAT (raw): loopback addresses are the host's own. From anywhere but lo, a 127/8 or ::1 destination
      // is a neighbour aiming at ports published on 127.0.0.1 through the host's MAC (prerouting's `fib daddr type
      // local` would DNAT it), or a container using its bridge's route_localnet. Destination first: the common
      // packet fails the cheap compare before any other match.
      // A 127/8 source from a container is accepted by the kernel because of route_localnet: spoofed loopback.
      // From an internal network, a packet for the host whose source is not routed back through that bridge is
      // spoofed (containers have CAP_NET_RAW): tsnet's DNS refuses to forward for internal networks by source
      // address (CVE-2024-29018), so a source borrowed from another network must not reach it (strict rp_filter).
      rules: [
        'ip daddr 127.0.0.0/8 iifname != "lo" drop',
        'ip6 daddr ::1 iifname != "lo" drop',
        'ip saddr 127.0.0.0/8 iifname @bridges drop',
        'iifname @internal fib daddr type local fib saddr . iif oif missing drop',
      ],
    },
    {
      name: 'forward',
      type: 'filter',
      hook: 'forward',
      // filter - 1: before dockerd's iptables-nft filter chains on the same hook; accepts carry the mark that
      // tsnet's one DOCKER-USER rule turns into a final accept there.
      priority: 'filter - 1',
      rules: [
        `oifname @bridges ct state established,related ${accept}`,
        // Published ports are reachable from wherever the host is, a member of an icc=false network included (as
        // through Docker's proxy); internal networks neither publish nor reach out.
        `iifname != @internal oifname != @internal oifname @bridges ct status dnat ${accept}`,
        'iifname . oifname @pairs iifname @noicc drop',
        `iifname . oifname @pairs ${accept}`,
        'iifname @internal drop',
        'oifname @internal drop',
        // Nothing else enters a tsnet network: not another network, not the LAN by direct routing.
        'oifname @bridges drop',
        // Docker's own bridge networks are off limits too.
        'iifname @bridges oifname @dockerbr drop',
        `iifname @bridges ${accept}`,
        // Where tsnet turned forwarding on, the host must not become a router between its other interfaces (dockerd
        // sets FORWARD to DROP when it is the one enabling forwarding; Docker's bridges are left to its rules).
        'meta nfproto @fwdguard iifname != @dockerbr oifname != @dockerbr drop',
      ],
    },
  ];
}

/** The bridge table's one chain (see {@link renderBridgeTable}). */
const BRIDGE_CHAIN = { name: 'forward', type: 'filter', hook: 'forward', rules: 1 } as const;

/** What an intact table holds besides elements, per family: chains (type, hook, rule count), sets and maps. */
export interface TableShape {
  chains: Array<{ name: string; type: string; hook: string; rules: number }>;
  sets: string[];
  maps: string[];
}

/** The shape {@link renderBase} gives each of tsnet's two tables (an inspection compares against it). */
export function baseShape(): Record<'inet' | 'bridge', TableShape> {
  return {
    inet: {
      chains: baseChains(0).map((c) => ({ name: c.name, type: c.type, hook: c.hook, rules: c.rules.length })),
      sets: SETS.map(([n]) => n),
      maps: MAPS.map(([n]) => n),
    },
    bridge: { chains: [{ ...BRIDGE_CHAIN }], sets: ['noiccports'], maps: [] },
  };
}

/**
 * The static part. Idempotent: objects are added if missing and each chain is flushed and refilled in the same
 * transaction, so applying it again (restart, lost ruleset) converges without a window where rules are missing.
 */
export function renderBase(mark: number, table = DEFAULT_TABLE): string {
  const T = `inet ${table}`;
  return [
    `add table ${T}`,
    ...SETS.map(([n, spec]) => `add set ${T} ${n} { ${spec} }`),
    ...MAPS.map(([n, spec]) => `add map ${T} ${n} { ${spec} }`),
    ...baseChains(mark).flatMap((c) => [
      `add chain ${T} ${c.name} { type ${c.type} hook ${c.hook} priority ${c.priority}; policy accept; }`,
      `flush chain ${T} ${c.name}`,
      ...c.rules.map((r) => `add rule ${T} ${c.name} ${r}`),
    ]),
    ...renderBridgeTable(mark, table),
  ].join('\n');
}

/** Every value interpolated into an element goes through the one token guard (names also quoted as nft strings). */
const nftValue = (v: string | number): string => safeToken(v, 'nft');
const nftName = (name: string): string => `"${nftValue(name)}"`;

function element(table: string, op: Op, set: string, items: string[], family: 'inet' | 'bridge' = 'inet'): string[] {
  return items.length === 0 ? [] : [`${op} element ${family} ${nftValue(table)} ${set} { ${items.join(', ')} }`];
}

/**
 * enable_icc=false without br_netfilter: bridged frames never reach the inet table, so the bridge family drops
 * frames between two ports of icc=false networks (bridge ports, by name: this kernel has no `meta ibrname`). With
 * br_netfilter (bridge-nf-call-iptables=1) the inet forward chain sees bridged frames first (brnf hooks at
 * priority 0); what it accepts carries the mark — a published port hairpinned to a neighbour, which br_netfilter
 * *bridges* after DNAT instead of routing — and passes here. (Bridge port isolation cannot make that exception.)
 */
function renderBridgeTable(mark: number, table: string): string[] {
  const T = `bridge ${table}`;
  return [
    `add table ${T}`,
    `add set ${T} noiccports { type ifname; }`,
    `add chain ${T} forward { type filter hook forward priority 100; policy accept; }`,
    `flush chain ${T} forward`,
    // IP only: ARP between members stays possible, as with Docker's icc=false (a bridged hairpin reply needs it).
    `add rule ${T} forward meta protocol { ip, ip6 } iifname @noiccports oifname @noiccports meta mark and ${markHex(mark)} != ${markHex(mark)} drop`,
  ];
}

/** Bridge ports (host veth ends) of icc=false networks. */
export function renderNoIccPorts(op: Op, ifnames: readonly string[], table = DEFAULT_TABLE): string[] {
  return elementLines(table, op, ifnames.map((n): [FwSetName, string] => ['noiccports', nftName(n)]));
}

/** A network's elements, set by set, in the order they are rendered. */
function networkElements(n: FwNetwork): Array<[FwSetName, string]> {
  const br = nftName(n.bridge);
  const nat = n.masquerade && !n.internal;
  const items: Array<[FwSetName, string]> = [
    ['bridges', br],
    ['pairs', `${br} . ${br}`],
  ];
  if (!n.icc) items.push(['noicc', br]);
  if (n.internal) items.push(['internal', br]);
  if (nat) items.push(['masq', br]);
  return items;
}

/** A published port's map element, `KEY : VALUE` as an add writes it. */
function portElement(p: FwPort): [FwSetName, string] {
  const v6 = p.containerIp.includes(':');
  const key = `${nftValue(p.proto)} . ${nftValue(p.hostPort)}`;
  const value = `${nftValue(p.containerIp)} . ${nftValue(p.containerPort)}`;
  return p.hostIp === undefined ? [v6 ? 'dnat6any' : 'dnat4any', `${key} : ${value}`] : [v6 ? 'dnat6' : 'dnat4', `${nftValue(p.hostIp)} . ${key} : ${value}`];
}

/** What a delete names of an element: a map element by its key alone. */
const keyOf = (item: string): string => item.split(' : ')[0];

const familyOf = (set: FwSetName): 'inet' | 'bridge' => (set === 'noiccports' ? 'bridge' : 'inet');

/** Element lines, one per set in first-seen order (a delete names map elements by key). */
function elementLines(table: string, op: Op, items: Array<[FwSetName, string]>): string[] {
  const bySet = new Map<FwSetName, string[]>();
  for (const [set, item] of items) bySet.set(set, [...(bySet.get(set) ?? []), op === 'delete' ? keyOf(item) : item]);
  return [...bySet].flatMap(([set, xs]) => element(table, op, set, xs, familyOf(set)));
}

/** Elements describing one network. */
export function renderNetwork(op: Op, n: FwNetwork, table = DEFAULT_TABLE): string[] {
  return elementLines(table, op, networkElements(n));
}

/** Map elements of published ports (ranges are already expanded to single ports). */
export function renderPorts(op: Op, ports: FwPort[], table = DEFAULT_TABLE): string[] {
  return ports.flatMap((p) => elementLines(table, op, [portElement(p)]));
}

/** Replaces the set of Docker's bridges (one transaction with whatever it is sent with). */
export function renderDockerBridges(names: readonly string[], table = DEFAULT_TABLE): string[] {
  return [`flush set inet ${table} dockerbr`, ...element(table, 'add', 'dockerbr', names.map(nftName))];
}

/** Turns on the forward guard of a family (tsnet enabled its forwarding). */
export function renderForwardGuard(family: FwFamily, table = DEFAULT_TABLE): string[] {
  return element(table, 'add', 'fwdguard', [family]);
}

/** Every set and map of the two tables. */
export const FW_SETS: readonly FwSetName[] = [...SETS.map(([n]) => n), ...MAPS.map(([n]) => n), 'noiccports'];

export function noElements(): FwElements {
  return { bridges: [], pairs: [], noicc: [], internal: [], masq: [], dockerbr: [], fwdguard: [], dnat4: [], dnat4any: [], dnat6: [], dnat6any: [], noiccports: [] };
}

/** The elements `want` implies, set by set, as nft writes them (what an inspection of an intact table reads back). */
export function wantedElements(want: FwWant): FwElements {
  const out = noElements();
  const items: Array<[FwSetName, string]> = [
    ...want.host.dockerBridges.map((b): [FwSetName, string] => ['dockerbr', nftName(b)]),
    ...want.noIccPorts.map((p): [FwSetName, string] => ['noiccports', nftName(p)]),
    ...want.host.forwardGuard.map((f): [FwSetName, string] => ['fwdguard', nftValue(f)]),
    ...want.networks.flatMap(networkElements),
    ...want.ports.map(portElement),
  ];
  for (const [set, item] of items) if (!out[set].includes(item)) out[set].push(item);
  return out;
}

/**
 * What turns `have` into `want`, set by set: a map element whose key stays but whose value changed is removed and
 * added again (the delete goes first in the transaction).
 */
export function diffElements(want: FwElements, have: FwElements): { add: FwElements; remove: FwElements } {
  const add = noElements();
  const remove = noElements();
  for (const set of FW_SETS) {
    const w = new Set(want[set]);
    const h = new Set(have[set]);
    add[set] = want[set].filter((x) => !h.has(x));
    remove[set] = have[set].filter((x) => !w.has(x));
  }
  return { add, remove };
}

/** One transaction's lines applying a diff: every delete, then every add. */
export function renderElementDiff(diff: { add: FwElements; remove: FwElements }, table = DEFAULT_TABLE): string[] {
  const items = (e: FwElements) => FW_SETS.flatMap((set) => e[set].map((x): [FwSetName, string] => [set, x]));
  return [...elementLines(table, 'delete', items(diff.remove)), ...elementLines(table, 'add', items(diff.add))];
}

export const NO_HOST: FwHost = { dockerBridges: [], forwardGuard: [] };

/**
 * Everything the given state implies, in one transaction: base, then every set emptied and refilled. Used at start
 * so a ruleset lost or changed behind tsnet's back converges to exactly the store's view.
 */
export function renderFull(mark: number, networks: FwNetwork[], ports: FwPort[], table = DEFAULT_TABLE, host: FwHost = NO_HOST, noIccPorts: readonly string[] = []): string {
  return [
    renderBase(mark, table),
    ...SETS.map(([n]) => `flush set inet ${table} ${n}`),
    ...MAPS.map(([n]) => `flush map inet ${table} ${n}`),
    `flush set bridge ${table} noiccports`,
    ...element(table, 'add', 'dockerbr', host.dockerBridges.map(nftName)),
    ...renderNoIccPorts('add', noIccPorts, table),
    ...host.forwardGuard.flatMap((f) => renderForwardGuard(f, table)),
    ...networks.flatMap((n) => renderNetwork('add', n, table)),
    ...renderPorts('add', ports, table),
  ].join('\n');
}
