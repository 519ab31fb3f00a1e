import { tsnetError } from '../../errors';
import type { KernelChange, LinkInfo } from '../../kernel/contract';
import type { EndpointRepair } from '../mode';
import { vethNamesFor } from '../../kernel/names';
import { macForIPv4, onSubnet, randomMac, tryParseCidr, tryParseIfAddr } from '../../netaddr';
import type { BridgeEndpointRecord, BridgeNetworkRecord } from '../../store/records';
import type { CreateEndpointRequest, EndpointInterface } from '../contract';

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** Endpoint options are dockerd's own com.docker.* keys; a bridge endpoint takes no `--driver-opt` of its own yet. */
function checkEndpointOptions(options: Record<string, unknown>): void {
  for (const key of Object.keys(options)) {
    if (!key.startsWith('com.docker.')) {
      throw tsnetError('TSN_INVALID_OPTION', `unknown endpoint option "${key}" for a tsnet bridge network`);
    }
  }
}

/**
 * The address must be an address of one of the network's subnets with that subnet's prefix length: the kernel
 * derives the container's on-link route from it. Compared as parsed values, never as text.
 */
function checkOnSubnet(field: string, cidr: string | undefined, subnets: BridgeNetworkRecord['ipv4']): void {
  if (cidr === undefined) return;
  const a = tryParseIfAddr(cidr);
  // tryParseCidr: a record from before pools were parsed at the edge may hold anything.
  const onPool = (text: string) => {
    const pool = tryParseCidr(text);
    return a !== undefined && pool !== undefined && onSubnet(pool, a);
  };
  const pools = subnets.map((s) => s.pool);
  if (!pools.some(onPool)) {
    throw tsnetError(
      'TSN_INVALID_ADDRESS',
      `Interface.${field} ${JSON.stringify(cidr)} is not an address of a subnet of the network with its prefix length (${pools.join(', ') || 'none'})`,
    );
  }
}

/** The endpoint record and the interface fields tsnet fills (only those dockerd left empty). */
export function planBridgeEndpoint(net: BridgeNetworkRecord, req: CreateEndpointRequest): { ep: BridgeEndpointRecord; reply: EndpointInterface } {
  checkEndpointOptions(req.options);
  const { address, addressIPv6, macAddress } = req.iface;
  checkOnSubnet('Address', address, net.ipv4);
  checkOnSubnet('AddressIPv6', addressIPv6, net.ipv6);
  if (macAddress !== undefined && !MAC_RE.test(macAddress)) {
    throw tsnetError('TSN_INVALID_ADDRESS', `Interface.MacAddress ${JSON.stringify(macAddress)}: expected six hex pairs like 02:42:ac:11:00:02`);
  }
  const names = vethNamesFor(req.endpointId);
  const mac = (macAddress ?? (address !== undefined ? macForIPv4(address) : randomMac())).toLowerCase();
  const ep: BridgeEndpointRecord = {
    id: req.endpointId,
    mode: 'bridge',
    networkId: net.id,
    hostIf: names.host,
    containerIf: names.container,
    mac,
    ...(address !== undefined ? { address } : {}),
    ...(addressIPv6 !== undefined ? { addressIPv6 } : {}),
    createdAt: new Date().toISOString(),
  };
  return { ep, reply: macAddress === undefined ? { macAddress: mac } : {} };
}

/** veth pair, host end on the bridge and up; the container end waits for dockerd to move it. */
export function endpointSetupChanges(net: BridgeNetworkRecord, ep: BridgeEndpointRecord): KernelChange[] {
  const mtu = net.mtu !== undefined ? { mtu: net.mtu } : {};
  return [
    { op: 'veth.add', name: ep.hostIf, peer: ep.containerIf, peerMac: ep.mac, ...mtu },
    { op: 'link.master', name: ep.hostIf, master: net.bridge },
    { op: 'link.up', name: ep.hostIf },
  ];
}

/** Deleting the host end removes the pair wherever the other end is. */
export function endpointLinks(ep: BridgeEndpointRecord): string[] {
  return [ep.hostIf];
}

/**
 * After a restart: the host end must be on the bridge. A missing pair of an endpoint never joined is made again; a
 * joined one that lost its host end lost its sandbox, and dockerd will Leave and delete it.
 */
export function bridgeEndpointRepair(ep: BridgeEndpointRecord, links: ReadonlyMap<string, LinkInfo>): EndpointRepair {
  const wanted = ep.sandboxKey ? [ep.hostIf] : [ep.hostIf, ep.containerIf];
  if (links.has(ep.hostIf)) return { wanted, rebuild: false };
  if (ep.sandboxKey) return { wanted, rebuild: false, lost: `joined endpoint lost its veth ${ep.hostIf}` };
  return { wanted, rebuild: true };
}
