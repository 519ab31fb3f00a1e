import { tsnetError } from '../errors';

/** Linux IFNAMSIZ is 16 including the NUL. */
export const MAX_IFNAME = 15;

/** Prefixes of every interface name tsnet generates; reconciliation only ever deletes links it recorded. */
export const BRIDGE_PREFIX = 'tsbr-';
export const HOST_VETH_PREFIX = 'tsv';
export const CONTAINER_VETH_PREFIX = 'tsc';
/** Child links made at Join, in the host namespace until dockerd moves them: macvlan and ipvlan. */
export const MACVLAN_CHILD_PREFIX = 'tsm';
export const IPVLAN_CHILD_PREFIX = 'tsi';
/** The host shim of a macvlan network. */
export const SHIM_PREFIX = 'tshs-';
/** The dummy parent of a child-link network created without `parent`. */
export const DUMMY_PREFIX = 'tsdm-';

/**
 * Names that are valid for the kernel but must not name a tsnet link: `/proc/sys/net/ipv{4,6}/conf/<name>/` of
 * `all` and `default` are the host-wide settings (a bridge sysctl would change every interface), `lo` is loopback,
 * `.` and `..` would make the path point elsewhere.
 */
const RESERVED_NAMES: ReadonlySet<string> = new Set(['all', 'default', 'lo', '.', '..']);

/**
 * Interface name rules the kernel enforces (dev_valid_name), narrowed to a safe character set so a name can go
 * into an `ip -batch` line, an nft string or a sysctl path, and never one of {@link RESERVED_NAMES}.
 */
export function validateIfName(name: string, field: string): string {
  if (RESERVED_NAMES.has(name)) {
    throw tsnetError('TSN_INVALID_OPTION', `${field} "${name}": reserved (${[...RESERVED_NAMES].join(', ')} name host-wide or special entries)`);
  }
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) {
    throw tsnetError(
      'TSN_INVALID_OPTION',
      `${field} "${name}": interface names are 1-${MAX_IFNAME} characters of letters, digits, '.', '-', '_'`,
    );
  }
  return name;
}

/** The ids dockerd sends are 64 hex characters; names take a prefix + as much of them as fits. */
function idName(prefix: string, id: string): string {
  return prefix + id.slice(0, MAX_IFNAME - prefix.length);
}

export function bridgeNameFor(networkId: string): string {
  return idName(BRIDGE_PREFIX, networkId);
}

export function vethNamesFor(endpointId: string): { host: string; container: string } {
  const tail = endpointId.slice(0, MAX_IFNAME - HOST_VETH_PREFIX.length);
  return { host: HOST_VETH_PREFIX + tail, container: CONTAINER_VETH_PREFIX + tail };
}

export function shimNameFor(networkId: string): string {
  return idName(SHIM_PREFIX, networkId);
}

export function dummyNameFor(networkId: string): string {
  return idName(DUMMY_PREFIX, networkId);
}

/** The host-namespace name of an endpoint's child link. */
export function childNameFor(kind: 'macvlan' | 'ipvlan', endpointId: string): string {
  const prefix = kind === 'macvlan' ? MACVLAN_CHILD_PREFIX : IPVLAN_CHILD_PREFIX;
  return idName(prefix, endpointId);
}

/** The id part of a generated name after `prefix`. */
const idTail = (prefix: string) => `[0-9a-z]{${MAX_IFNAME - prefix.length}}`;

const GENERATED: Array<{ re: RegExp; kind: string }> = [
  { re: new RegExp(`^${BRIDGE_PREFIX}${idTail(BRIDGE_PREFIX)}$`), kind: 'bridge' },
  { re: new RegExp(`^(${HOST_VETH_PREFIX}|${CONTAINER_VETH_PREFIX})${idTail(HOST_VETH_PREFIX)}$`), kind: 'veth' },
  { re: new RegExp(`^(${MACVLAN_CHILD_PREFIX}${idTail(MACVLAN_CHILD_PREFIX)}|${SHIM_PREFIX}${idTail(SHIM_PREFIX)})$`), kind: 'macvlan' },
  { re: new RegExp(`^${IPVLAN_CHILD_PREFIX}${idTail(IPVLAN_CHILD_PREFIX)}$`), kind: 'ipvlan' },
  { re: new RegExp(`^${DUMMY_PREFIX}${idTail(DUMMY_PREFIX)}$`), kind: 'dummy' },
  // 802.1Q subinterfaces keep the user's NAME.ID: only the owner tag tells tsnet's apart (the sweep requires it).
  { re: /^[A-Za-z0-9_-][A-Za-z0-9_.-]*\.[1-9][0-9]{0,3}$/, kind: 'vlan' },
];

/** A link whose exact name shape and kind say tsnet generated it (reconciliation may delete these if unrecorded). */
export function isGeneratedLink(link: { name: string; kind: string }): boolean {
  return GENERATED.some((g) => g.kind === link.kind && g.re.test(link.name));
}

/**
 * Docker's own bridges, by its naming rule: docker0 and `br-` + the first 12 hex digits of the network id. Exact,
 * so a host's own uplink bridge named br-lan or br-ex is never taken for one.
 */
export function isDockerBridge(link: { name: string; kind: string }): boolean {
  return link.kind === 'bridge' && isDockerBridgeName(link.name);
}

export function isDockerBridgeName(name: string): boolean {
  return name === 'docker0' || /^br-[0-9a-f]{12}$/.test(name);
}
