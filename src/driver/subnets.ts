import { tsnetError } from '../errors';
import { addressOf, onSubnet, subnetOf, tryParseCidr, tryParseIfAddr } from '../netaddr';
import type { SubnetRecord } from '../store/records';
import type { IpamData } from './contract';

/** Every mode's endpoints: addresses on the network's subnets, MACs in one spelling. Shared, so the modes agree. */

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** The record of one subnet dockerd passed in CreateNetwork. */
export function subnetRecord(d: IpamData): SubnetRecord {
  return { pool: d.pool, ...(d.gateway ? { gateway: d.gateway } : {}), auxAddresses: { ...d.auxAddresses } };
}

/** Plain gateway of the subnet holding `cidr`. */
export function gatewayFor(cidr: string | undefined, subnets: SubnetRecord[]): string | undefined {
  if (cidr === undefined) return undefined;
  const pool = subnetOf(
    cidr,
    subnets.map((s) => s.pool),
  );
  const gw = subnets.find((s) => s.pool === pool)?.gateway;
  return gw === undefined ? undefined : addressOf(gw);
}

/**
 * The address must be an address of one of the network's subnets with that subnet's prefix length: the kernel
 * derives the container's on-link route from it. Compared as parsed values, never as text.
 */
export function checkOnSubnet(field: string, cidr: string | undefined, subnets: SubnetRecord[]): void {
  if (cidr === undefined) return;
  const a = tryParseIfAddr(cidr);
  // tryParseCidr: a record from before pools were parsed at the edge may hold anything.
  const onPool = (text: string) => {
    const pool = tryParseCidr(text);
    return a !== undefined && pool !== undefined && onSubnet(pool, a);
  };
  const pools = subnets.map((s) => s.pool);
  if (!pools.some(onPool)) {
    throw tsnetError(
      'TSN_INVALID_ADDRESS',
      `Interface.${field} ${JSON.stringify(cidr)} is not an address of a subnet of the network with its prefix length (${pools.join(', ') || 'none'})`,
    );
  }
}

/** A MAC dockerd passed (`--mac-address`), checked. */
export function checkMac(macAddress: string | undefined): void {
  if (macAddress !== undefined && !MAC_RE.test(macAddress)) {
    throw tsnetError('TSN_INVALID_ADDRESS', `Interface.MacAddress ${JSON.stringify(macAddress)}: expected six hex pairs like 02:42:ac:11:00:02`);
  }
}
