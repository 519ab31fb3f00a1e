import type { NetworkMode } from '../mode';
import { endpointLinks, endpointSetupChanges, planBridgeEndpoint } from './endpoint';
import { bridgeJoinResponse } from './joinleave';
import { bridgePortWants } from './ports';
import { bridgeFirewallView, bridgeRepairSteps, bridgeSetupSteps, planBridgeNetwork, releaseBridgeNetwork } from './network';

/** Linux bridge + veth pairs, docker0's model. */
export const bridgeMode: NetworkMode = {
  planNetwork: planBridgeNetwork,
  networkLinks: (net) => [net.bridge],
  setupSteps: (net, kernel) => bridgeSetupSteps(net, kernel.firewall),
  repairSteps: bridgeRepairSteps,
  firewallView: bridgeFirewallView,
  ownedLinks: (net) => (net.ownsBridge ? [net.bridge] : []),
  releaseNetwork: releaseBridgeNetwork,
  planEndpoint: planBridgeEndpoint,
  endpointSetupChanges,
  endpointLinks,
  joinResponse: bridgeJoinResponse,
  portWants: bridgePortWants,
};
