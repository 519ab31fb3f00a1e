import { tsnetError } from '../errors';
import type { KernelChange, LinkInfo } from '../kernel/contract';
import { childNameFor } from '../kernel/names';
import { addressOf } from '../netaddr';
import type { ChildEndpointRecord, ChildNetworkCommon, ChildNetworkRecord } from '../store/records';
import type { CreateEndpointRequest, CreateNetworkRequest, JoinResponse, StaticRoute } from './contract';
import type { EndpointRepair, HostView } from './mode';
import { IFACE_PREFIX_OPTION, checkEndpointOptions, parseIfacePrefix } from './option-values';
import { PARENT_OPTION, type ParentUse, checkParent, parseParent } from './parent';
import { checkMac, checkOnSubnet, gatewayFor, subnetRecord } from './subnets';

/**
 * What macvlan and ipvlan share: one child link of the parent per endpoint, made at Join in the host namespace for
 * dockerd to move into the sandbox, and no kernel work at CreateNetwork beyond the parent. Each mode adds its own
 * options, link kind and extras (the macvlan host shim).
 */

type ChildMode = ChildNetworkRecord['mode'];

/** Options every child-link mode takes besides its own. */
const COMMON_OPTIONS = ['mode', PARENT_OPTION, IFACE_PREFIX_OPTION] as const;

/**
 * Parses what every child-link network has, after refusing any option the mode does not know (naming it and the
 * mode). Without a parent the network is internal on its own dummy link, as Docker's.
 */
export async function planChildCommon(
  req: CreateNetworkRequest,
  host: HostView,
  mode: ChildMode,
  own: readonly string[],
  rules: Pick<ParentUse, 'passthru' | 'ipvlan'>,
): Promise<ChildNetworkCommon> {
  const known = [...COMMON_OPTIONS, ...own];
  for (const key of Object.keys(req.driverOptions)) {
    if (!known.includes(key)) throw tsnetError('TSN_INVALID_OPTION', `unknown option "${key}" for mode=${mode} (known: ${known.join(', ')})`);
  }
  const o: Record<string, string | undefined> = req.driverOptions;
  const parent = parseParent(o[PARENT_OPTION], req.networkId, mode);
  const prefix = o[IFACE_PREFIX_OPTION];
  const ipv4 = req.ipv4.map(subnetRecord);
  const ipv6 = req.enableIPv6 ? req.ipv6.map(subnetRecord) : [];
  await checkParent({ ...parent, ...rules, networkId: req.networkId, mode, subnets: [...ipv4, ...ipv6].map((s) => s.pool) }, host);
  return {
    id: req.networkId,
    parent: parent.link,
    parentSpec: parent.spec,
    ifacePrefix: prefix === undefined ? 'eth' : parseIfacePrefix(prefix, mode),
    ipv4,
    ipv6,
    enableIPv6: req.enableIPv6,
    // A dummy parent reaches nothing outside the host: the network is internal whatever dockerd says.
    internal: req.internal || parent.spec.kind === 'dummy',
    options: { ...req.driverOptions },
    createdAt: new Date().toISOString(),
  };
}

/**
 * An address or MAC another endpoint of the network (`peers`) holds is refused: the kernel takes each once on a
 * parent (ipvlan addresses, macvlan MACs, the shim's route per address). dockerd's IPAM never hands one out twice,
 * but a record left stale by a crash, or another IPAM, may.
 */
function checkUnique(net: ChildNetworkRecord, peers: readonly ChildEndpointRecord[], field: string, value: string | undefined, of: (p: ChildEndpointRecord) => string | undefined): void {
  if (value === undefined) return;
  const key = field === 'MacAddress' ? value.toLowerCase() : addressOf(value);
  const holder = peers.find((p) => of(p) === key);
  if (holder) {
    const what = field === 'MacAddress' ? 'MAC' : 'address';
    throw tsnetError('TSN_ADDRESS_IN_USE', `Interface.${field} ${JSON.stringify(value)} is the ${what} of endpoint ${holder.id.slice(0, 12)} on network ${net.id.slice(0, 12)}`);
  }
}

const plain = (cidr: string | undefined) => (cidr === undefined ? undefined : addressOf(cidr));

/** The endpoint record: addresses on the network's subnets, and the MAC when the mode has its own (`mac`). */
export function planChildEndpoint(
  net: ChildNetworkRecord,
  req: CreateEndpointRequest,
  peers: readonly ChildEndpointRecord[],
  mac: ((address: string | undefined) => string) | undefined,
): ChildEndpointRecord {
  checkEndpointOptions(req.options, net.mode);
  const { address, addressIPv6, macAddress } = req.iface;
  checkOnSubnet('Address', address, net.ipv4);
  checkOnSubnet('AddressIPv6', addressIPv6, net.ipv6);
  if (macAddress !== undefined && mac === undefined) {
    throw tsnetError(
      'TSN_INVALID_ADDRESS',
      `Interface.MacAddress ${JSON.stringify(macAddress)}: ${net.mode} links share their parent's MAC, so mode=${net.mode} takes no --mac-address`,
    );
  }
  checkMac(macAddress);
  checkUnique(net, peers, 'Address', address, (p) => plain(p.address));
  checkUnique(net, peers, 'AddressIPv6', addressIPv6, (p) => plain(p.addressIPv6));
  const chosen = mac && (macAddress ?? mac(address)).toLowerCase();
  checkUnique(net, peers, 'MacAddress', macAddress ?? chosen, (p) => p.mac);
  return {
    id: req.endpointId,
    mode: net.mode,
    networkId: net.id,
    link: childNameFor(net.mode, req.endpointId),
    ...(chosen !== undefined ? { mac: chosen } : {}),
    ...(address !== undefined ? { address } : {}),
    ...(addressIPv6 !== undefined ? { addressIPv6 } : {}),
    createdAt: new Date().toISOString(),
  };
}

/** The child link, at Join. */
export function childLinkChanges(net: ChildNetworkRecord, ep: ChildEndpointRecord): KernelChange[] {
  switch (net.mode) {
    case 'macvlan':
      return [
        { op: 'macvlan.add', name: ep.link, parent: net.parent, mode: net.settings.macvlanMode, ...(ep.mac !== undefined ? { mac: ep.mac } : {}) },
      ];
    case 'ipvlan':
      return [{ op: 'ipvlan.add', name: ep.link, parent: net.parent, mode: net.settings.ipvlanMode, flag: net.settings.ipvlanFlag }];
  }
}

/**
 * Join reply. Gateways from the subnets unless the network is internal; `routed` (ipvlan l3/l3s) has no gateway on
 * the wire: connected default routes out of the link instead, as Docker. Without either dockerd would add an eth1 on
 * docker_gwbridge, so such networks say DisableGatewayService.
 */
export function childJoinResponse(net: ChildNetworkRecord, ep: ChildEndpointRecord, routed: boolean): JoinResponse {
  const onLink = !net.internal && routed;
  const gateway = net.internal || routed ? undefined : gatewayFor(ep.address, net.ipv4);
  const gatewayIPv6 = net.internal || routed ? undefined : gatewayFor(ep.addressIPv6, net.ipv6);
  const staticRoutes: StaticRoute[] = onLink
    ? [...(ep.address ? ['0.0.0.0/0'] : []), ...(ep.addressIPv6 ? ['::/0'] : [])].map((destination) => ({ destination, routeType: 1 }))
    : [];
  return {
    srcName: ep.link,
    dstPrefix: net.ifacePrefix,
    ...(gateway ? { gateway } : {}),
    ...(gatewayIPv6 ? { gatewayIPv6 } : {}),
    staticRoutes,
    disableGatewayService: onLink || (gateway === undefined && gatewayIPv6 === undefined),
  };
}

/** The child is in the host namespace only between Join and the move, or after the sandbox gave it back. */
export function childLinks(ep: ChildEndpointRecord): string[] {
  return [ep.link];
}

/**
 * After a restart nothing is rebuilt: a joined endpoint's link lives in its sandbox (or, between Join and the move,
 * in the host namespace, where the sweep must leave it for dockerd's Leave); an unjoined one has no link yet.
 */
export function childEndpointRepair(net: ChildNetworkRecord, ep: ChildEndpointRecord, links: ReadonlyMap<string, LinkInfo>): EndpointRepair {
  const wanted = ep.sandboxKey ? [ep.link] : [];
  // A child dies with its parent, even inside its sandbox: a parent made again does not bring it back.
  if (ep.sandboxKey && !links.has(net.parent))
    return { wanted, rebuild: false, lost: `joined endpoint lost its ${net.mode} link with parent ${net.parent}` };
  return { wanted, rebuild: false };
}
