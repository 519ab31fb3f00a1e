import type { Repair } from '../driver/reconcile-plan';
import { describeRepair } from '../driver/reconcile-plan';
import type { Allocations } from '../ipam/driver';
import type { EndpointRecord, NetworkRecord } from '../store/records';
import type { ContainerEndpoints } from '../docker/contract';
import { assertNever } from '../errors';
import type { EndpointStatus, NetworkStatus, PoolStatus, PortEntry, RepairLine } from './contract';

/** Pure: the admin answers' bodies from the driver's and the IPAM's state (server.ts gathers it). */

/** Addresses in a CIDR, as decimal text. */
function cidrSize(cidr: string): string {
  const slash = cidr.lastIndexOf('/');
  const bits = cidr.includes(':') ? 128 : 32;
  return (1n << BigInt(bits - Number(cidr.slice(slash + 1)))).toString();
}

export function poolsStatus(alloc: Allocations): PoolStatus[] {
  const used = new Map<string, number>();
  for (const a of alloc.addresses) used.set(a.poolId, (used.get(a.poolId) ?? 0) + 1);
  return alloc.pools.map((p) => ({ id: p.poolId, pool: p.pool, ...(p.subPool ? { subPool: p.subPool } : {}), used: used.get(p.poolId) ?? 0, size: cidrSize(p.pool) }));
}

function linkOf(net: NetworkRecord): string {
  switch (net.mode) {
    case 'bridge':
      return net.bridge;
    case 'macvlan':
    case 'ipvlan':
      return net.parent;
    default:
      return assertNever(net, 'network mode');
  }
}

export function networksStatus(networks: readonly NetworkRecord[], endpoints: readonly EndpointRecord[], pools: readonly PoolStatus[]): NetworkStatus[] {
  return networks.map((n) => {
    const subnets = [...n.ipv4, ...n.ipv6].map((s) => s.pool);
    // A network's subnets are tsnet's pools when tsnet is its IPAM driver too (the pool's CIDR is the subnet).
    const own = pools.filter((p) => subnets.includes(p.pool));
    const poolUse = own.length > 0 ? { used: own.reduce((sum, p) => sum + p.used, 0), size: own.reduce((sum, p) => sum + BigInt(p.size), 0n).toString() } : undefined;
    return {
      id: n.id,
      mode: n.mode,
      link: linkOf(n),
      subnets,
      internal: n.internal,
      endpoints: endpoints.filter((e) => e.networkId === n.id).length,
      ...(poolUse ? { poolUse } : {}),
      pending: n.pending === true,
    };
  });
}

export function endpointsStatus(endpoints: readonly EndpointRecord[]): EndpointStatus[] {
  return endpoints.map((e) => ({
    id: e.id,
    networkId: e.networkId,
    addresses: [e.address, e.addressIPv6].flatMap((a) => a ?? []),
    ...(e.mac ? { mac: e.mac } : {}),
    link: e.mode === 'bridge' ? e.hostIf : e.link,
    joined: e.sandboxKey !== undefined,
    ports: e.ports?.length ?? 0,
    pending: e.pending === true,
  }));
}

/**
 * Every published port, with its container named from Docker's listing when there is one. `container` (an id
 * prefix or a name) keeps only that container's: undefined when no running container matches.
 */
export function portEntries(endpoints: readonly EndpointRecord[], containers: readonly ContainerEndpoints[] | undefined, container?: string): PortEntry[] | undefined {
  const byEndpoint = new Map((containers ?? []).flatMap((c) => c.endpointIds.map((id) => [id, c] as const)));
  let wanted: ContainerEndpoints | undefined;
  if (container !== undefined) {
    const name = container.replace(/^\//, '');
    // Docker's own order: an exact id, then an exact name, then a unique id prefix.
    const list = containers ?? [];
    const prefixed = list.filter((c) => c.id.startsWith(name));
    wanted = list.find((c) => c.id === name) ?? list.find((c) => c.name === name) ?? (prefixed.length === 1 ? prefixed[0] : undefined);
    if (!wanted) return undefined;
  }
  const entries: PortEntry[] = [];
  for (const e of endpoints) {
    const c = byEndpoint.get(e.id);
    if (wanted && c !== wanted) continue;
    for (const p of e.ports ?? []) {
      entries.push({
        endpointId: e.id,
        networkId: e.networkId,
        ...(c ? { containerId: c.id, containerName: c.name } : {}),
        proto: p.proto,
        containerPort: p.containerPort,
        containerIp: p.containerIp,
        ...(p.hostIp !== undefined ? { hostIp: p.hostIp } : {}),
        hostPort: p.hostPort,
      });
    }
  }
  return entries;
}

export function repairLines(plan: readonly Repair[]): RepairLine[] {
  return plan.map((r) => ({
    kind: r.kind,
    ...('networkId' in r ? { networkId: r.networkId } : {}),
    ...('endpointId' in r ? { endpointId: r.endpointId } : {}),
    description: describeRepair(r),
  }));
}
