import type { KernelChange, LinkInfo } from '../../kernel/contract';
import { tsnetError } from '../../errors';
import type { EndpointRepair } from '../mode';
import { vethNamesFor } from '../../kernel/names';
import { macForIPv4, randomMac } from '../../netaddr';
import { checkMac, checkOnSubnet } from '../subnets';
import { checkEndpointOptions } from '../option-values';
import type { BridgeEndpointRecord, BridgeNetworkRecord } from '../../store/records';
import type { CreateEndpointRequest, EndpointInterface } from '../contract';

/**
 * Ports a Linux bridge holds (BR_MAX_PORTS 1024, port number 0 reserved): the kernel refuses the next one with
 * EXFULL ("Exchange full") when the veth pair is already made.
 */
export const BRIDGE_MAX_PORTS = 1023;

/**
 * The endpoint record and the interface fields tsnet fills (only those dockerd left empty). `peers`: the network's
 * endpoints, each holding one port of the bridge; one past the kernel's limit is refused before anything is made.
 */
export function planBridgeEndpoint(
  net: BridgeNetworkRecord,
  req: CreateEndpointRequest,
  peers: readonly BridgeEndpointRecord[],
): { ep: BridgeEndpointRecord; reply: EndpointInterface } {
  if (peers.length >= BRIDGE_MAX_PORTS) {
    throw tsnetError(
      'TSN_BRIDGE_FULL',
      `network ${net.id.slice(0, 12)}: bridge ${net.bridge} has ${peers.length} endpoints, the most a Linux bridge holds is ${BRIDGE_MAX_PORTS} ports; use another network for more`,
    );
  }
  checkEndpointOptions(req.options, 'bridge');
  const { address, addressIPv6, macAddress } = req.iface;
  checkOnSubnet('Address', address, net.ipv4);
  checkOnSubnet('AddressIPv6', addressIPv6, net.ipv6);
  checkMac(macAddress);
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
