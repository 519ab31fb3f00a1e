import type { FwFamily, FwHost, FwNetwork, FwPort } from './contract';
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
const SETS: Array<[name: string, spec: string]> = [
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
const MAPS: Array<[name: string, spec: string]> = [
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

/**
 * The static part. Idempotent: objects are added if missing and each chain is flushed and refilled in the same
 * transaction, so applying it again (restart, lost ruleset) converges without a window where rules are missing.
 */
export function renderBase(mark: number, table = DEFAULT_TABLE): string {
  const T = `inet ${table}`;
  const accept = `meta mark set meta mark or ${markHex(mark)} accept`;
  const chains: Array<[name: string, hook: string, rules: string[]]> = [
    [
      'prerouting',
      'type nat hook prerouting priority dstnat; policy accept;',
      // Published ports: traffic to a host address (or the one bound) on a published port goes to the container.
      DNAT_RULES,
    ],
    ['output', 'type nat hook output priority -100; policy accept;', DNAT_RULES],
    [
      'postrouting',
      'type nat hook postrouting priority srcnat; policy accept;',
      [
        // Outbound NAT: what a network sends out of the host leaves with the host's address. Keyed by bridge, not
        // by subnet, so networks with equal or overlapping subnets (other IPAMs) never collide in a set.
        'iifname @masq oifname != @bridges masquerade',
        // Hairpin: a container reaching a published port of its own network through a host address must see the
        // reply come back from that address, so the connection is masqueraded behind the gateway.
        'ct status dnat iifname . oifname @pairs masquerade',
        // Published on 127.0.0.1 (route_localnet on the bridge): a loopback source cannot be routed to a container.
        'ip saddr 127.0.0.0/8 oifname @bridges masquerade',
      ],
    ],
    [
      'localnet',
      'type filter hook prerouting priority raw; policy accept;',
      // Before DNAT (raw): loopback addresses are the host's own. From anywhere but lo, a 127/8 or ::1 destination
      // is a neighbour aiming at ports published on 127.0.0.1 through the host's MAC (prerouting's `fib daddr type
      // local` would DNAT it), or a container using its bridge's route_localnet. Destination first: the common
      // packet fails the cheap compare before any other match.
      // A 127/8 source from a container is accepted by the kernel because of route_localnet: spoofed loopback.
      // From an internal network, a packet for the host whose source is not routed back through that bridge is
      // spoofed (containers have CAP_NET_RAW): tsnet's DNS refuses to forward for internal networks by source
      // address (CVE-2024-29018), so a source borrowed from another network must not reach it (strict rp_filter).
      [
        'ip daddr 127.0.0.0/8 iifname != "lo" drop',
        'ip6 daddr ::1 iifname != "lo" drop',
        'ip saddr 127.0.0.0/8 iifname @bridges drop',
        'iifname @internal fib daddr type local fib saddr . iif oif missing drop',
      ],
    ],
    [
      'forward',
      // filter - 1: before dockerd's iptables-nft filter chains on the same hook; accepts carry the mark that
      // tsnet's one DOCKER-USER rule turns into a final accept there.
      'type filter hook forward priority filter - 1; policy accept;',
      [
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
    ],
  ];
  return [
    `add table ${T}`,
    ...SETS.map(([n, spec]) => `add set ${T} ${n} { ${spec} }`),
    ...MAPS.map(([n, spec]) => `add map ${T} ${n} { ${spec} }`),
    ...chains.flatMap(([n, hook, rules]) => [`add chain ${T} ${n} { ${hook} }`, `flush chain ${T} ${n}`, ...rules.map((r) => `add rule ${T} ${n} ${r}`)]),
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
  return element(table, op, 'noiccports', ifnames.map(nftName), 'bridge');
}

/** Elements describing one network. */
export function renderNetwork(op: Op, n: FwNetwork, table = DEFAULT_TABLE): string[] {
  const br = nftName(n.bridge);
  const nat = n.masquerade && !n.internal;
  return [
    ...element(table, op, 'bridges', [br]),
    ...element(table, op, 'pairs', [`${br} . ${br}`]),
    ...element(table, op, 'noicc', n.icc ? [] : [br]),
    ...element(table, op, 'internal', n.internal ? [br] : []),
    ...element(table, op, 'masq', nat ? [br] : []),
  ];
}

/** Map elements of published ports (ranges are already expanded to single ports). */
export function renderPorts(op: Op, ports: FwPort[], table = DEFAULT_TABLE): string[] {
  return ports.flatMap((p) => {
    const v6 = p.containerIp.includes(':');
    const target = op === 'add' ? ` : ${nftValue(p.containerIp)} . ${nftValue(p.containerPort)}` : '';
    const key = `${nftValue(p.proto)} . ${nftValue(p.hostPort)}${target}`;
    return p.hostIp === undefined
      ? element(table, op, v6 ? 'dnat6any' : 'dnat4any', [key])
      : element(table, op, v6 ? 'dnat6' : 'dnat4', [`${nftValue(p.hostIp)} . ${key}`]);
  });
}

/** Replaces the set of Docker's bridges (one transaction with whatever it is sent with). */
export function renderDockerBridges(names: readonly string[], table = DEFAULT_TABLE): string[] {
  return [`flush set inet ${table} dockerbr`, ...element(table, 'add', 'dockerbr', names.map(nftName))];
}

/** Turns on the forward guard of a family (tsnet enabled its forwarding). */
export function renderForwardGuard(family: FwFamily, table = DEFAULT_TABLE): string[] {
  return element(table, 'add', 'fwdguard', [family]);
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
