import type { BridgeEndpointRecord, BridgeNetworkRecord } from '../../store/records';
import type { NetworkMode } from '../mode';
import { bridgeEndpointRepair, endpointLinks, endpointSetupChanges, planBridgeEndpoint } from './endpoint';
import { bridgeJoinResponse } from './joinleave';
import { bridgePortWants } from './ports';
import { bridgeFirewallView, bridgeRepairSteps, bridgeSetupSteps, planBridgeNetwork, releaseBridgeNetwork } from './network';

/** Linux bridge + veth pairs, docker0's model: all kernel work at CreateNetwork and CreateEndpoint, none at Join. */
export const bridgeMode: NetworkMode<BridgeNetworkRecord, BridgeEndpointRecord> = {
  name: 'bridge',
  isEndpoint: (ep): ep is BridgeEndpointRecord => ep.mode === 'bridge',
  planNetwork: planBridgeNetwork,
  networkLinks: (net) => [net.bridge],
  setupSteps: (net, kernel) => bridgeSetupSteps(net, kernel.firewall),
  repairSteps: (net, links) => bridgeRepairSteps(net, links.get(net.bridge)),
  firewallView: bridgeFirewallView,
  ownedLinks: (net) => (net.ownsBridge ? [net.bridge] : []),
  releaseNetwork: releaseBridgeNetwork,
  planEndpoint: planBridgeEndpoint,
  endpointSetupChanges,
  joinChanges: () => [],
  leaveLinks: () => [],
  endpointLinks,
  endpointRepair: (net, ep, host) => bridgeEndpointRepair(net, ep, host.links),
  joinResponse: bridgeJoinResponse,
  operInfo: (net, ep) => ({ hostInterface: ep.hostIf, bridge: net.bridge, macAddress: ep.mac }),
  portWants: bridgePortWants,
};
