import { assertNever, tsnetError } from '../errors';
import type { NetworkRecord } from '../store/records';
import { bridgeMode } from './bridge';
import { ipvlanMode } from './ipvlan';
import { macvlanMode } from './macvlan';
import type { CreateNetworkRequest } from './contract';
import { bindMode, type BoundNetwork, type HostView } from './mode';

/** The driver option choosing a network's mode (Docker's own name for it on macvlan and ipvlan). */
export const MODE_OPTION = 'mode';
const DEFAULT_MODE = 'bridge';

type ModeName = NetworkRecord['mode'];

/** The registry, keyed by `-o mode`: a record mode without its planner does not compile. */
const PLANNERS: { [M in ModeName]: (req: CreateNetworkRequest, host: HostView) => Promise<Extract<NetworkRecord, { mode: M }>> } = {
  bridge: (req, host) => bridgeMode.planNetwork(req, host),
  macvlan: (req, host) => macvlanMode.planNetwork(req, host),
  ipvlan: (req, host) => ipvlanMode.planNetwork(req, host),
};

function isModeName(name: string): name is ModeName {
  return Object.hasOwn(PLANNERS, name);
}

/** Plans a network in the mode its `-o mode` names (bridge when absent); an unknown mode is refused naming it. */
export async function planNetwork(req: CreateNetworkRequest, host: HostView): Promise<NetworkRecord> {
  const name = req.driverOptions[MODE_OPTION] ?? DEFAULT_MODE;
  if (!isModeName(name)) {
    throw tsnetError('TSN_INVALID_OPTION', `option ${MODE_OPTION}="${name}": expected one of ${Object.keys(PLANNERS).join(', ')}`);
  }
  return await PLANNERS[name](req, host);
}

/** The network with its mode's behaviour bound. */
export function modeOf(net: NetworkRecord): BoundNetwork {
  switch (net.mode) {
    case 'bridge':
      return bindMode(bridgeMode, net);
    case 'macvlan':
      return bindMode(macvlanMode, net);
    case 'ipvlan':
      return bindMode(ipvlanMode, net);
    default:
      return assertNever(net, 'network mode');
  }
}
