import { tsnetError } from '../errors';

/** Linux IFNAMSIZ is 16 including the NUL. */
export const MAX_IFNAME = 15;

/** Prefixes of every interface name tsnet generates; reconciliation only ever deletes links it recorded. */
export const BRIDGE_PREFIX = 'tsbr-';
export const HOST_VETH_PREFIX = 'tsv';
export const CONTAINER_VETH_PREFIX = 'tsc';

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

/** The ids dockerd sends are 64 hex characters; names take a prefix of them. */
export function bridgeNameFor(networkId: string): string {
  return BRIDGE_PREFIX + networkId.slice(0, MAX_IFNAME - BRIDGE_PREFIX.length);
}

export function vethNamesFor(endpointId: string): { host: string; container: string } {
  const tail = endpointId.slice(0, MAX_IFNAME - HOST_VETH_PREFIX.length);
  return { host: HOST_VETH_PREFIX + tail, container: CONTAINER_VETH_PREFIX + tail };
}

const GENERATED: Array<{ re: RegExp; kind: string }> = [
  { re: new RegExp(`^${BRIDGE_PREFIX}[0-9a-z]{${MAX_IFNAME - BRIDGE_PREFIX.length}}$`), kind: 'bridge' },
  { re: new RegExp(`^(${HOST_VETH_PREFIX}|${CONTAINER_VETH_PREFIX})[0-9a-z]{${MAX_IFNAME - HOST_VETH_PREFIX.length}}$`), kind: 'veth' },
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
