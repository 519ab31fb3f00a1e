import { randomBytes } from 'node:crypto';

/** A random locally administered unicast MAC (02:xx:...), as the kernel would pick for a new link. */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfc) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** The address part of a CIDR ("172.28.5.1/16" → "172.28.5.1"). */
export function addressOf(cidr: string): string {
  const slash = cidr.indexOf('/');
  return slash < 0 ? cidr : cidr.slice(0, slash);
}

/**
 * Docker's MAC for an IPv4 endpoint: 02:42 followed by the address. The same address always gets the same MAC, so a
 * container that takes over an address (restart, redeploy) is not cut off by neighbours' stale ARP entries.
 */
export function macForIPv4(cidrOrAddr: string): string {
  const octets = addressOf(cidrOrAddr).split('.').map(Number);
  return ['02', '42', ...octets.map((o) => o.toString(16).padStart(2, '0'))].join(':');
}
