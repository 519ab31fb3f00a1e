import type { BridgeEndpointRecord, BridgeNetworkRecord } from '../../store/records';
import { gatewayFor } from '../subnets';
import type { JoinResponse } from '../contract';

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
