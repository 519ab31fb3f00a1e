import type { IpvlanFlag, IpvlanMode } from '../../kernel/contract';
import type { ChildEndpointRecord, IpvlanNetworkRecord } from '../../store/records';
import { childEndpointRepair, childJoinResponse, childLinkChanges, childLinks, planChildCommon, planChildEndpoint } from '../child-link';
import type { CreateNetworkRequest } from '../contract';
import type { HostView, NetworkMode } from '../mode';
import { pickOption } from '../option-values';

/** Docker's ipvlan option names. */
const OPT = { mode: 'ipvlan_mode', flag: 'ipvlan_flag' } as const;
const MODES: readonly IpvlanMode[] = ['l2', 'l3', 'l3s'];
const FLAGS: readonly IpvlanFlag[] = ['bridge', 'private', 'vepa'];

async function planIpvlanNetwork(req: CreateNetworkRequest, host: HostView): Promise<IpvlanNetworkRecord> {
  const o: Record<string, string | undefined> = req.driverOptions;
  const settings = {
    ipvlanMode: pickOption('ipvlan', OPT.mode, o[OPT.mode], MODES, 'l2'),
    ipvlanFlag: pickOption('ipvlan', OPT.flag, o[OPT.flag], FLAGS, 'bridge'),
  };
  const common = await planChildCommon(req, host, 'ipvlan', Object.values(OPT), { passthru: false, ipvlan: settings });
  return { ...common, mode: 'ipvlan', settings };
}

/** ipvlan children of a parent (sharing its MAC); l3 and l3s route rather than bridge, so no gateway on the wire. */
export const ipvlanMode: NetworkMode<IpvlanNetworkRecord, ChildEndpointRecord> = {
  name: 'ipvlan',
  isEndpoint: (ep): ep is ChildEndpointRecord => ep.mode === 'ipvlan',
  planNetwork: planIpvlanNetwork,
  parentOf: (net) => ({ link: net.parent, spec: net.parentSpec }),
  networkLinks: () => [],
  setupSteps: () => [],
  repairSteps: () => [],
  firewallView: () => undefined,
  ownedLinks: () => [],
  releaseNetwork: async () => undefined,
  planEndpoint: (net, req, peers) => planChildEndpoint(net, req, peers, undefined),
  endpointSetupChanges: () => [],
  joinChanges: childLinkChanges,
  leaveLinks: childLinks,
  endpointLinks: childLinks,
  endpointRepair: (net, ep, host) => childEndpointRepair(net, ep, host.links),
  joinResponse: (net, ep) => childJoinResponse(net, ep, net.settings.ipvlanMode !== 'l2'),
  operInfo: (net, ep) => ({ parent: net.parent, link: ep.link, ipvlanMode: net.settings.ipvlanMode }),
};
