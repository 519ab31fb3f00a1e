/**
 * The one narrow interface to the host kernel. Every driver goes through it; iproute2.ts implements it with
 * `ip`/`nft` run from argument arrays (never a shell), fake.ts records calls for unit tests.
 *
 * Changes are data so callers can log them, batch them and undo them (see steps.ts).
 */

/** macvlan modes as the kernel names them (Docker's `macvlan_mode`). */
export type MacvlanMode = 'bridge' | 'private' | 'vepa' | 'passthru';
/** ipvlan modes and flags as the kernel names them (Docker's `ipvlan_mode`, `ipvlan_flag`). */
export type IpvlanMode = 'l2' | 'l3' | 'l3s';
export type IpvlanFlag = 'bridge' | 'private' | 'vepa';

export type KernelChange =
  | { op: 'bridge.add'; name: string; mtu?: number; mac?: string }
  | { op: 'veth.add'; name: string; peer: string; mtu?: number; peerMac?: string }
  /** A macvlan child of `parent`. */
  | { op: 'macvlan.add'; name: string; parent: string; mode: MacvlanMode; mtu?: number; mac?: string }
  /** An ipvlan child of `parent` (children share the parent's MAC). */
  | { op: 'ipvlan.add'; name: string; parent: string; mode: IpvlanMode; flag: IpvlanFlag; mtu?: number }
  /** An 802.1Q subinterface of `parent` tagging with `vlanId`. */
  | { op: 'vlan.add'; name: string; parent: string; vlanId: number; mtu?: number }
  /** A dummy link (the parent of a network that has no NIC). */
  | { op: 'dummy.add'; name: string; mtu?: number }
  | { op: 'link.master'; name: string; master: string }
  | { op: 'link.up'; name: string }
  | { op: 'link.del'; name: string }
  | { op: 'addr.add'; dev: string; cidr: string }
  | { op: 'addr.del'; dev: string; cidr: string }
  /** A route to `dst` (CIDR) out of `dev` (main table, scope link). */
  | { op: 'route.add'; dst: string; dev: string }
  | { op: 'route.del'; dst: string; dev: string }
  /** Write a sysctl under /proc/sys, e.g. key 'net/ipv6/conf/tsbr-1/disable_ipv6'. */
  | { op: 'sysctl.set'; key: string; value: string };

export interface LinkInfo {
  name: string;
  /** 'bridge', 'veth', 'macvlan', ... or '' for a plain device. */
  kind: string;
  master?: string;
  /** The link this one is stacked on (ip's `name@lower`: a VLAN's or macvlan's parent; a veth's peer). */
  lower?: string;
  /** 802.1Q id of a VLAN link. */
  vlanId?: number;
  /** The link's alias; tsnet sets it to its owner tag on links it creates. */
  owner?: string;
  mtu: number;
  mac: string;
  up: boolean;
  /** Addresses on the link, CIDR. */
  addresses: string[];
}

export interface RouteInfo {
  /** CIDR ('0.0.0.0/0' for default). */
  dst: string;
  dev?: string;
}

/**
 * Thrown by {@link Kernel.apply}: which change failed (`change`, at `index` in the list) and how many changes from
 * the start took effect (`applied`). A change that took effect in part (its first command ran, a later one such as
 * the owner alias failed) counts as applied, so a rollback undoes it.
 */
export class KernelChangeError extends Error {
  readonly applied: number;

  constructor(
    readonly change: KernelChange,
    readonly index: number,
    message: string,
    partly = false,
  ) {
    super(message);
    this.name = 'KernelChangeError';
    this.applied = partly ? index + 1 : index;
  }
}

/** What the firewall needs to know of a network. */
export interface FwNetwork {
  bridge: string;
  internal: boolean;
  /** Members may talk to each other (`enable_icc`). */
  icc: boolean;
  /** Outbound NAT for what leaves the network (`enable_ip_masquerade`). */
  masquerade: boolean;
}

/** An address family as nftables names it (`meta nfproto`). */
export type FwFamily = 'ipv4' | 'ipv6';

/** Host facts the ruleset depends on beyond tsnet's own networks. */
export interface FwHost {
  /** Docker's own bridges present on the host (docker0, br-<12 hex>). */
  dockerBridges: string[];
  /** Families whose forwarding tsnet turned on (see the forward guard in firewall-render.ts). */
  forwardGuard: FwFamily[];
}

/** One published port (a host port range is already resolved to one port). */
export interface FwPort {
  proto: 'tcp' | 'udp' | 'sctp';
  /** Host address it is bound to; undefined for every local address of the container's family. */
  hostIp?: string;
  hostPort: number;
  containerIp: string;
  containerPort: number;
}

/** The sets and maps of tsnet's tables (`noiccports` is in the bridge-family table, the rest in the inet one). */
export type FwSetName = 'bridges' | 'pairs' | 'noicc' | 'internal' | 'masq' | 'dockerbr' | 'fwdguard' | 'dnat4' | 'dnat4any' | 'dnat6' | 'dnat6any' | 'noiccports';

/** Elements of every set and map, each as an nft add writes it (`"tsbr-x"`, `tcp . 8080 : 172.28.0.2 . 80`). */
export type FwElements = Record<FwSetName, string[]>;

/** Everything tsnet's table must hold: the records' networks, ports and icc=false ports, and the host facts. */
export interface FwWant {
  networks: FwNetwork[];
  ports: FwPort[];
  /** The bridge ports (host veth ends) of icc=false networks. */
  noIccPorts: string[];
  host: FwHost;
}

/** tsnet's tables as they are in the kernel (read, never changed, by {@link Firewall.inspect}). */
export interface FwInspection {
  /**
   * `absent`: neither table exists; `intact`: both hold every chain (type, hook, rule count), set and map the base
   * renders, so elements alone can be patched; `damaged`: anything else (`why` says what), which only a full sync mends.
   */
  table: 'absent' | 'intact' | 'damaged';
  why?: string;
  /** Elements read (of an intact table; empty otherwise). */
  elements: FwElements;
  /** DOCKER-USER exists (iptables or ip6tables) without tsnet's rule in it. */
  hookMissing: boolean;
}

/** Element changes turning an intact table into the wanted one, and whether the DOCKER-USER rule must go in. */
export interface FwPatch {
  add: FwElements;
  remove: FwElements;
  hook: boolean;
}

/**
 * The firewall part of the kernel interface: tsnet's rules live only in its own nftables table, changed per network
 * and per port as single transactions. Removals are idempotent.
 */
export interface Firewall {
  /**
   * Makes the table exactly `want`. Without `patch`: the whole table (base plus every element) in one transaction,
   * then the DOCKER-USER hook. With a patch (computed from an inspection that found the table intact): only its
   * element changes, in one transaction, and the hook if it says so; an empty patch runs nothing. Either way the
   * firewall takes `want` as what its table holds from now on.
   */
  sync(want: FwWant, patch?: FwPatch): Promise<void>;
  /** Reads tsnet's tables and DOCKER-USER rule, changing nothing. */
  inspect(): Promise<FwInspection>;
  /** Removes tsnet's table and its DOCKER-USER rule (when tsnet has no network left); a no-op when absent. */
  removeBase(): Promise<void>;
  addNetwork(n: FwNetwork): Promise<void>;
  removeNetwork(n: FwNetwork): Promise<void>;
  addPorts(ports: FwPort[]): Promise<void>;
  removePorts(ports: FwPort[]): Promise<void>;
  /** Bridge ports of an icc=false network: frames between two of them are dropped even without br_netfilter. */
  addNoIccPorts(ifnames: string[]): Promise<void>;
  removeNoIccPorts(ifnames: string[]): Promise<void>;
  /** Drops forwarding of the family that involves no tsnet or Docker bridge, from now on (tsnet enabled it). */
  setForwardGuard(family: FwFamily): Promise<void>;
  /** Re-reads Docker's bridges from the host links and updates the table when they changed. */
  refreshDockerBridges(): Promise<void>;
}

export interface Kernel {
  /**
   * Applies changes in order (batched where the tool allows). On failure throws {@link KernelChangeError}; changes
   * before the failing one stay applied, so callers undo them.
   */
  apply(changes: KernelChange[]): Promise<void>;
  links(): Promise<LinkInfo[]>;
  link(name: string): Promise<LinkInfo | undefined>;
  routes(v6: boolean): Promise<RouteInfo[]>;
  /** Reads a sysctl under /proc/sys (key as in sysctl.set), trimmed; undefined when the host has none by that key. */
  readSysctl(key: string): Promise<string | undefined>;
  readonly firewall: Firewall;
  /** Tag every link this kernel creates carries (LinkInfo.owner), naming this tsnet instance. */
  readonly owner: string;
  /**
   * The same kernel on its own lane for slow background work (link deletion), so a plugin call's changes never
   * queue behind it.
   */
  readonly background: Kernel;
}
