import { addressOf, subnetOf } from '../../netaddr';
import type { BridgeEndpointRecord, BridgeNetworkRecord, SubnetRecord } from '../../store/records';
import type { JoinResponse } from '../contract';

/** Plain gateway of the subnet holding `cidr`. */
function gatewayFor(cidr: string | undefined, subnets: SubnetRecord[]): string | undefined {
  if (cidr === undefined) return undefined;
  const pool = subnetOf(cidr, subnets.map((s) => s.pool));
  const gw = subnets.find((s) => s.pool === pool)?.gateway;
  return gw === undefined ? undefined : addressOf(gw);
}

/**
 * Join reply: the container end of the veth and the gateways. Without any gateway dockerd would add an eth1 on
 * docker_gwbridge, so internal or gateway-less networks say DisableGatewayService instead.
 */
export function bridgeJoinResponse(net: BridgeNetworkRecord, ep: BridgeEndpointRecord): JoinResponse {
  const gateway = net.internal ? undefined : gatewayFor(ep.address, net.ipv4);
  const gatewayIPv6 = net.internal ? undefined : gatewayFor(ep.addressIPv6, net.ipv6);
  return {
    srcName: ep.containerIf,
    dstPrefix: net.settings.ifacePrefix,
    ...(gateway ? { gateway } : {}),
    ...(gatewayIPv6 ? { gatewayIPv6 } : {}),
    staticRoutes: [],
    disableGatewayService: gateway === undefined && gatewayIPv6 === undefined,
  };
}
