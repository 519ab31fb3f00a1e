import type { FwPort, IpvlanFlag, IpvlanMode, MacvlanMode } from '../kernel/contract';

/**
 * Persisted shapes: what tsnet must remember across restarts because dockerd never replays CreateNetwork or
 * IPAM calls (remote-api.md §6). Changing a shape means a new schema version in migrations.ts.
 */

/** One IPAM pool, ref-counted: identical RequestPool calls share it. */
export interface PoolRecord {
  id: string;
  addressSpace: string;
  /** Canonical CIDR of the pool. */
  pool: string;
  /** Canonical CIDR of the ip-range dynamic allocation draws from, when one was given. */
  subPool?: string;
  v6: boolean;
  refs: number;
  options: Record<string, string>;
  /** Chosen by tsnet from its default pools (not requested explicitly). */
  dynamic: boolean;
  /** Next offset for serial allocation (`com.docker.network.ipam.serial`), as a decimal string (BigInt). */
  serialCursor?: string;
}

/** One allocated address in a pool. */
export interface AddressRecord {
  poolId: string;
  /** Canonical address without prefix length. */
  address: string;
  /** 'gateway' when dockerd asked with RequestAddressType=gateway, else 'address'. */
  kind: 'gateway' | 'address';
}

/** One subnet of a network as dockerd passed it in CreateNetwork (IPv4Data / IPv6Data). */
export interface SubnetRecord {
  /** Canonical CIDR. */
  pool: string;
  /** Gateway in CIDR form (address/prefix-of-pool), or absent when IPAM gave none. */
  gateway?: string;
  auxAddresses: Record<string, string>;
}

/** What every network record holds, whatever its mode. */
export interface NetworkCommon {
  id: string;
  ipv4: SubnetRecord[];
  ipv6: SubnetRecord[];
  enableIPv6: boolean;
  internal: boolean;
  /** The driver options exactly as given (`-o`), for inspect; the mode's typed settings are what tsnet acts on. */
  options: Record<string, string>;
  createdAt: string;
  /**
   * Set in the commit that precedes the network's kernel work and cleared in a second commit once it is done, before
   * dockerd gets its answer. A record still pending at start was never answered as a success: it is undone.
   */
  pending?: true;
  /**
   * The CreateNetwork request that made it (driver/request-digest.ts): an identical repeat is answered as success, a
   * different one refused. Absent on records made before tsnet kept it: every repeat is refused.
   */
  requestDigest?: string;
}

/** A bridge network's options, parsed once at CreateNetwork (defaults filled in). */
export interface BridgeSettings {
  enableIcc: boolean;
  enableMasquerade: boolean;
  hostBindingIpv4: string;
  /** Do not put IPv4 gateway addresses on the bridge (the gateway is elsewhere). */
  inhibitIpv4: boolean;
  ifacePrefix: string;
}

export interface BridgeNetworkRecord extends NetworkCommon {
  mode: 'bridge';
  /** Linux bridge device name. */
  bridge: string;
  /** tsnet created the bridge (else it adopted an existing one and must never delete it). */
  ownsBridge: boolean;
  /** Addresses (CIDR) tsnet put on the bridge; only these are removed on DeleteNetwork. */
  bridgeAddresses: string[];
  mac: string;
  mtu?: number;
  settings: BridgeSettings;
}

/** The gateways (CIDR) a bridge network puts on its bridge: IPv4 ones unless inhibit_ipv4, and IPv6 ones. */
export function bridgeGateways(inhibitIpv4: boolean, ipv4: ReadonlyArray<{ gateway?: string }>, ipv6: ReadonlyArray<{ gateway?: string }>): string[] {
  return [...(inhibitIpv4 ? [] : ipv4), ...ipv6].flatMap((s) => (s.gateway ? [s.gateway] : []));
}

/**
 * How tsnet gets a child-link network's parent when the link is missing: a NIC is the host's (refused when missing),
 * an 802.1Q subinterface `lower.vlanId` and a dummy link tsnet makes itself.
 */
export type ParentSpec = { kind: 'nic' } | { kind: 'vlan'; lower: string; vlanId: number } | { kind: 'dummy' };

/** Settings every child-link (macvlan, ipvlan) network keeps. */
export interface ChildNetworkCommon extends NetworkCommon {
  /** The link the children are made on (see the `parent` collection for who owns it). */
  parent: string;
  parentSpec: ParentSpec;
  ifacePrefix: string;
}

/**
 * The host's way into its own macvlan containers: a bridge-mode macvlan link on the parent with a /32 (/128) host
 * address, and a route per endpoint address out of it.
 */
export interface HostShim {
  link: string;
  /** Addresses on the shim, /32 or /128. */
  addresses: string[];
  /** Addresses tsnet's IPAM reserved for it (released with the network); aux addresses are dockerd's. */
  reserved: HostAddress[];
}

/** An address the driver reserved in tsnet's IPAM (plain address). */
export interface HostAddress {
  poolId: string;
  address: string;
}

export interface MacvlanSettings {
  macvlanMode: MacvlanMode;
}

export interface MacvlanNetworkRecord extends ChildNetworkCommon {
  mode: 'macvlan';
  settings: MacvlanSettings;
  shim?: HostShim;
}

export interface IpvlanSettings {
  ipvlanMode: IpvlanMode;
  ipvlanFlag: IpvlanFlag;
}

export interface IpvlanNetworkRecord extends ChildNetworkCommon {
  mode: 'ipvlan';
  settings: IpvlanSettings;
}

export type ChildNetworkRecord = MacvlanNetworkRecord | IpvlanNetworkRecord;

export type NetworkRecord = BridgeNetworkRecord | ChildNetworkRecord;

/** What every endpoint record holds, whatever its mode. */
export interface EndpointCommon {
  id: string;
  networkId: string;
  /** CIDR. */
  address?: string;
  /** CIDR. */
  addressIPv6?: string;
  /** Sandbox key once joined. */
  sandboxKey?: string;
  /** Published ports with the host ports chosen, while external connectivity is programmed. */
  ports?: FwPort[];
  createdAt: string;
  /** As {@link NetworkCommon.pending}: CreateEndpoint's kernel work is not known to be done. */
  pending?: true;
  /** As {@link NetworkCommon.requestDigest}, of the CreateEndpoint request. */
  requestDigest?: string;
}

/** An endpoint of a bridge network: a veth pair. */
export interface BridgeEndpointRecord extends EndpointCommon {
  mode: 'bridge';
  mac: string;
  /** Host-side veth, on the bridge. */
  hostIf: string;
  /** Container-side veth until dockerd moves it into the sandbox. */
  containerIf: string;
}

/** An endpoint of a macvlan or ipvlan network: one child link of the parent, made at Join. */
export interface ChildEndpointRecord extends EndpointCommon {
  mode: ChildNetworkRecord['mode'];
  /** The child's name in the host namespace (dockerd moves it into the sandbox and renames it). */
  link: string;
  /** macvlan only: ipvlan children share the parent's MAC. */
  mac?: string;
}

export type EndpointRecord = BridgeEndpointRecord | ChildEndpointRecord;

/**
 * A parent link child-link networks share, keyed by link name. Ownership belongs to the link: when tsnet created it
 * (`owned`), it is deleted when its last user goes, whichever network made it; a link tsnet found is never deleted.
 */
export interface ParentRecord {
  link: string;
  owned: boolean;
  /** How to make the link again after a restart (owned links). */
  spec: ParentSpec;
  /** Ids of the networks on it. */
  users: string[];
}

/**
 * A link tsnet removed from its state and still has to delete from the kernel (deletion runs in the background:
 * unregistering a netdev costs 20-45 ms of kernel time that dockerd need not wait for). Written in the same commit
 * that drops the owning record, so a crash before the deletion cannot leak the link.
 */
export interface TombstoneRecord {
  link: string;
  createdAt: string;
}

/**
 * A host sysctl tsnet switched on that was off before (IP forwarding), keyed by the sysctl key. It outlives every
 * network: tsnet never switches forwarding off again, so what it guards (see driver/forwarding.ts) must stay guarded.
 */
export interface HostSysctlRecord {
  /** Under /proc/sys, e.g. 'net/ipv4/ip_forward'. */
  key: string;
  /** The value before tsnet changed it. */
  before: string;
  changedAt: string;
}

/**
 * The Docker daemon (its /info ID) reclaim trusts to speak for the dockerd using tsnet (src/reclaim/), kept across
 * restarts so a tsnet left holding only what dockerd never learnt of can still clean it up. Key `docker`.
 */
export interface TrustRecord {
  /**
   * Empty while only promised: a tsnet that started holding nothing trusts the first daemon it reads, even when a
   * crash came between its first calls and that read (src/reclaim/trust.ts).
   */
  daemonId: string;
  /** Why it was trusted: it knew tsnet's networks, or it was read first by a tsnet holding nothing. */
  evidence: 'network' | 'first-use';
  since: string;
}

/** Collections and the record type each holds. */
export interface Collections {
  tombstone: TombstoneRecord;
  network: NetworkRecord;
  endpoint: EndpointRecord;
  pool: PoolRecord;
  address: AddressRecord;
  host: HostSysctlRecord;
  parent: ParentRecord;
  trust: TrustRecord;
}

export type CollectionName = keyof Collections;
