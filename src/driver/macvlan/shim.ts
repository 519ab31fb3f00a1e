import { tsnetError } from '../../errors';
import type { KernelChange, LinkInfo } from '../../kernel/contract';
import { shimNameFor } from '../../kernel/names';
import { addressOf } from '../../netaddr';
import type { ChildEndpointRecord, HostAddress, HostShim, MacvlanNetworkRecord } from '../../store/records';
import type { IpamData } from '../contract';
import type { HostView } from '../mode';
import type { Step } from '../steps';

/**
 * The host shim (`-o tsnet.host_shim=true`): the kernel never passes frames between a macvlan parent and its own
 * children, so the host reaches its macvlan containers through a macvlan link of its own on the parent. Its address
 * is a /32 (/128) and each container gets a /32 (/128) route out of it: no subnet route, so the host's own route to
 * the LAN on the parent stays as it was.
 */

export const SHIM_OPTION = 'tsnet.host_shim';
/** The `--aux-address` name giving the shim its address. */
export const SHIM_AUX = 'host_shim';

const host = (address: string) => `${address}/${address.includes(':') ? 128 : 32}`;

/**
 * The shim's address of one family: `--aux-address host_shim=IP` on a subnet, else one reserved from the first
 * subnet's pool in tsnet's IPAM; a pool that is not tsnet's needs the aux address.
 */
async function shimAddress(subnets: IpamData[], view: HostView): Promise<{ address: string; reserved?: HostAddress } | undefined> {
  const first = subnets.at(0);
  if (!first) return undefined;
  const aux = subnets.flatMap((s) => s.auxAddresses[SHIM_AUX] ?? []).at(0);
  if (aux !== undefined) return { address: addressOf(aux) };
  const got = await view.hostAddresses.reserve(first.addressSpace, first.pool);
  if (!got) {
    throw tsnetError(
      'TSN_INVALID_OPTION',
      `option ${SHIM_OPTION}=true (mode=macvlan): pool ${first.pool} (address space ${first.addressSpace}) is not one of tsnet's IPAM pools; give the shim an address with --aux-address ${SHIM_AUX}=IP`,
    );
  }
  return { address: addressOf(got.address), reserved: got };
}

/** Plans the shim; reserves its addresses last, releasing what it took if the second family fails. */
export async function planShim(networkId: string, ipv4: IpamData[], ipv6: IpamData[], view: HostView): Promise<HostShim> {
  const v4 = await shimAddress(ipv4, view);
  let v6;
  try {
    v6 = await shimAddress(ipv6, view);
  } catch (err) {
    if (v4?.reserved) await view.hostAddresses.release(v4.reserved.poolId, v4.reserved.address);
    throw err;
  }
  const got = [v4, v6].flatMap((a) => a ?? []);
  return { link: shimNameFor(networkId), addresses: got.map((a) => host(a.address)), reserved: got.flatMap((a) => a.reserved ?? []) };
}

function shimChanges(net: MacvlanNetworkRecord, shim: HostShim): KernelChange[] {
  return [
    { op: 'macvlan.add', name: shim.link, parent: net.parent, mode: 'bridge' },
    ...shim.addresses.map((cidr): KernelChange => ({ op: 'addr.add', dev: shim.link, cidr })),
    { op: 'link.up', name: shim.link },
  ];
}

export function shimSteps(net: MacvlanNetworkRecord): Step[] {
  return net.shim ? [{ name: 'host shim', changes: shimChanges(net, net.shim) }] : [];
}

/** After a restart: a missing shim is made again, a present one gets back lost addresses and its up state. */
export function shimRepairSteps(net: MacvlanNetworkRecord, links: ReadonlyMap<string, LinkInfo>): Step[] {
  const shim = net.shim;
  if (!shim) return [];
  const link = links.get(shim.link);
  if (!link) return shimSteps(net);
  const changes: KernelChange[] = [
    ...shim.addresses.filter((c) => !link.addresses.includes(c)).map((cidr): KernelChange => ({ op: 'addr.add', dev: shim.link, cidr })),
    ...(link.up ? [] : [{ op: 'link.up' as const, name: shim.link }]),
  ];
  return changes.length > 0 ? [{ name: 'host shim', changes }] : [];
}

/** The routes to one endpoint out of the shim. */
export function shimRoutes(net: MacvlanNetworkRecord, ep: ChildEndpointRecord): Array<{ dst: string; dev: string }> {
  const shim = net.shim;
  if (!shim) return [];
  return [ep.address, ep.addressIPv6].flatMap((a) => (a === undefined ? [] : [{ dst: host(addressOf(a)), dev: shim.link }]));
}
