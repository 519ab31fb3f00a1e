import { tsnetError } from '../../errors';
import type { MacvlanMode } from '../../kernel/contract';
import { macForIPv4, randomMac } from '../../netaddr';
import type { ChildEndpointRecord, MacvlanNetworkRecord } from '../../store/records';
import { childEndpointRepair, childJoinResponse, childLinkChanges, childLinks, planChildCommon, planChildEndpoint } from '../child-link';
import type { CreateNetworkRequest } from '../contract';
import type { HostView, NetworkMode } from '../mode';
import { parseBool, pickOption } from '../option-values';
import { SHIM_OPTION, planShim, shimRepairSteps, shimRoutes, shimSteps } from './shim';

/** Docker's macvlan option name, and tsnet's own for the host shim. */
const MODE_OPT = 'macvlan_mode';
const MODES: readonly MacvlanMode[] = ['bridge', 'private', 'vepa', 'passthru'];

async function planMacvlanNetwork(req: CreateNetworkRequest, host: HostView): Promise<MacvlanNetworkRecord> {
  const o: Record<string, string | undefined> = req.driverOptions;
  const macvlanMode = pickOption('macvlan', MODE_OPT, o[MODE_OPT], MODES, 'bridge');
  const shimOpt = o[SHIM_OPTION];
  const wantShim = shimOpt !== undefined && parseBool(SHIM_OPTION, shimOpt, 'macvlan');
  // The shim is a bridge-mode sibling of the children: private children never talk to it, passthru has no siblings.
  if (wantShim && (macvlanMode === 'private' || macvlanMode === 'passthru')) {
    throw tsnetError('TSN_INVALID_OPTION', `option ${SHIM_OPTION}="true" (mode=macvlan): needs ${MODE_OPT}=bridge or vepa, not "${macvlanMode}"`);
  }
  const common = await planChildCommon(req, host, 'macvlan', [MODE_OPT, SHIM_OPTION], { passthru: macvlanMode === 'passthru' });
  const shim = wantShim ? await planShim(req.networkId, req.ipv4, common.enableIPv6 ? req.ipv6 : [], host) : undefined;
  return { ...common, mode: 'macvlan', settings: { macvlanMode }, ...(shim ? { shim } : {}) };
}

/** Docker's MAC rule: derived from the IPv4 address, so a container taking over an address keeps neighbours' ARP. */
const macFor = (address: string | undefined) => (address !== undefined ? macForIPv4(address) : randomMac());

/** macvlan children of a parent, each with its own MAC; optionally a host shim so the host reaches them. */
export const macvlanMode: NetworkMode<MacvlanNetworkRecord, ChildEndpointRecord> = {
  name: 'macvlan',
  isEndpoint: (ep): ep is ChildEndpointRecord => ep.mode === 'macvlan',
  planNetwork: planMacvlanNetwork,
  parentOf: (net) => ({ link: net.parent, spec: net.parentSpec }),
  reservedAddresses: (net) => net.shim?.reserved ?? [],
  networkLinks: (net) => (net.shim ? [net.shim.link] : []),
  setupSteps: shimSteps,
  repairSteps: shimRepairSteps,
  firewallView: () => undefined,
  ownedLinks: (net) => (net.shim ? [net.shim.link] : []),
  // The shim's addresses and routes go with the shim link.
  releaseNetwork: async () => undefined,
  planEndpoint: (net, req, peers) => planChildEndpoint(net, req, peers, macFor),
  endpointSetupChanges: (net, ep) => shimRoutes(net, ep).map((r) => ({ op: 'route.add', ...r })),
  endpointRemovalChanges: (net, ep) => shimRoutes(net, ep).map((r) => ({ op: 'route.del', ...r })),
  joinChanges: childLinkChanges,
  leaveLinks: childLinks,
  endpointLinks: childLinks,
  endpointRepair: (net, ep, host) => {
    // Routes gone with a lost shim (made again by the network's repair), or removed by someone else.
    const missing = shimRoutes(net, ep).filter((r) => !host.routes.some((h) => h.dst === r.dst && h.dev === r.dev));
    return { ...childEndpointRepair(net, ep, host.links), changes: missing.map((r) => ({ op: 'route.add', ...r })) };
  },
  joinResponse: (net, ep) => childJoinResponse(net, ep, false),
  operInfo: (net, ep) => ({ parent: net.parent, link: ep.link, macvlanMode: net.settings.macvlanMode, ...(ep.mac ? { macAddress: ep.mac } : {}) }),
};
