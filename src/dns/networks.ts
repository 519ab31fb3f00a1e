import { assertNever } from '../errors';
import { addressOf } from '../netaddr';
import { bridgeGateways, type NetworkRecord } from '../store/records';
import type { DnsNetwork } from './contract';

/**
 * tsnet's networks as the DNS room sees them. Only a bridge network has host addresses its containers reach (its
 * gateways on the bridge); a macvlan or ipvlan network's gateway is the LAN's router, and its host shim faces the
 * LAN, so listening there is the operator's choice (`--dns-listen`).
 */
export function dnsNetworks(records: ReadonlyArray<NetworkRecord>): DnsNetwork[] {
  return records.map((n) => ({
    id: n.id,
    internal: n.internal,
    subnets: [...n.ipv4, ...n.ipv6].map((s) => s.pool),
    hostAddresses: hostAddresses(n),
  }));
}

function hostAddresses(n: NetworkRecord): string[] {
  switch (n.mode) {
    case 'bridge':
      return bridgeGateways(n.settings.inhibitIpv4, n.ipv4, n.ipv6).map(addressOf);
    case 'macvlan':
    case 'ipvlan':
      return [];
    default:
      return assertNever(n, 'network mode');
  }
}
