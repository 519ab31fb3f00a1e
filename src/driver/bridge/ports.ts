import { tsnetError } from '../../errors';
import { addressOf, tryParseIp } from '../../netaddr';
import type { BridgeEndpointRecord, BridgeNetworkRecord } from '../../store/records';
import type { PortBinding } from '../contract';
import type { PortWant } from '../port-allocator';

/**
 * Normalised host address (IPv4-mapped IPv6 counts as IPv4). Zone ids are refused, and so is ::1: nothing can be
 * forwarded from IPv6 loopback to a container (IPv6 has no route_localnet).
 */
function parseHostIp(text: string): { family: 4 | 6; ip: string; any: boolean } {
  const ip = tryParseIp(text);
  if (!ip) throw tsnetError('TSN_INVALID_OPTION', `port binding HostIP "${text}": not an IP address`);
  if (ip.text === '::1') throw tsnetError('TSN_INVALID_OPTION', `port binding HostIP "${text}": publishing on IPv6 loopback is not supported; use 127.0.0.1`);
  return { family: ip.v6 ? 6 : 4, ip: ip.text, any: ip.value === 0n };
}

/**
 * What dockerd's port map asks of a bridge endpoint, one want per family: HostIP "" means the network's
 * host_binding_ipv4 (all addresses by default) and, when the container has an IPv6 address, all IPv6 addresses too.
 */
export function bridgePortWants(net: BridgeNetworkRecord, ep: BridgeEndpointRecord, bindings: PortBinding[]): PortWant[] {
  const containerIp = { 4: ep.address && addressOf(ep.address), 6: ep.addressIPv6 && addressOf(ep.addressIPv6) };
  return bindings.flatMap((b) => {
    const hostPorts: PortWant['hostPorts'] = b.hostPort === 0 ? 'ephemeral' : [b.hostPort, Math.max(b.hostPort, b.hostPortEnd)];
    const targets: Array<{ family: 4 | 6; hostIp?: string }> = [];
    if (b.hostIp === undefined || b.hostIp === '') {
      const def = parseHostIp(net.settings.hostBindingIpv4);
      targets.push({ family: 4, ...(def.any ? {} : { hostIp: def.ip }) });
      if (containerIp[6]) targets.push({ family: 6 });
    } else {
      const h = parseHostIp(b.hostIp);
      if (!containerIp[h.family]) {
        throw tsnetError('TSN_INVALID_OPTION', `port binding HostIP "${b.hostIp}": the container has no IPv${h.family} address on this network`);
      }
      targets.push({ family: h.family, ...(h.any ? {} : { hostIp: h.ip }) });
    }
    return targets.flatMap((t) => {
      const ip = containerIp[t.family];
      return ip ? [{ proto: b.proto, ...t, hostPorts, containerIp: ip, containerPort: b.port }] : [];
    });
  });
}
