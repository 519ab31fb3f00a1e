import type { KernelChange, LinkInfo } from '../../kernel/contract';
import type { EndpointRepair } from '../mode';
import { vethNamesFor } from '../../kernel/names';
import { macForIPv4, randomMac } from '../../netaddr';
import { checkMac, checkOnSubnet } from '../subnets';
import { checkEndpointOptions } from '../option-values';
import type { BridgeEndpointRecord, BridgeNetworkRecord } from '../../store/records';
import type { CreateEndpointRequest } from '../contract';

/** The endpoint record, with the MAC dockerd gave or one tsnet picks. */
export function planBridgeEndpoint(net: BridgeNetworkRecord, req: CreateEndpointRequest): BridgeEndpointRecord {
  checkEndpointOptions(req.options, 'bridge');
  const { address, addressIPv6, macAddress } = req.iface;
  checkOnSubnet('Address', address, net.ipv4);
  checkOnSubnet('AddressIPv6', addressIPv6, net.ipv6);
  checkMac(macAddress);
  const names = vethNamesFor(req.endpointId);
  const mac = (macAddress ?? (address !== undefined ? macForIPv4(address) : randomMac())).toLowerCase();
  return {
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
 * After a restart: the host end must be on the bridge and up. A missing pair of an endpoint never joined is made
 * again; a joined one that lost its host end lost its sandbox, and dockerd will Leave and delete it. Both ends are
 * wanted: a joined endpoint's container end still in the host namespace is dockerd's to move (deleting it would
 * take the host end along).
 */
export function bridgeEndpointRepair(net: BridgeNetworkRecord, ep: BridgeEndpointRecord, links: ReadonlyMap<string, LinkInfo>): EndpointRepair {
  const wanted = [ep.hostIf, ep.containerIf];
  const host = links.get(ep.hostIf);
  if (host) {
    const changes: KernelChange[] = [
      ...(host.master === net.bridge ? [] : [{ op: 'link.master' as const, name: ep.hostIf, master: net.bridge }]),
      ...(host.up ? [] : [{ op: 'link.up' as const, name: ep.hostIf }]),
    ];
    return { wanted, rebuild: false, ...(changes.length > 0 ? { changes } : {}) };
  }
  if (ep.sandboxKey) return { wanted, rebuild: false, lost: `joined endpoint lost its veth ${ep.hostIf}` };
  return { wanted, rebuild: true };
}
