import { bridgeGateways, type BridgeNetworkRecord } from '../../store/records';
import type { Firewall, FwNetwork, Kernel, KernelChange, LinkInfo } from '../../kernel/contract';
import { bridgeNameFor } from '../../kernel/names';
import { tsnetError } from '../../errors';
import { randomMac } from '../../netaddr';
import type { CreateNetworkRequest } from '../contract';
import { subnetRecord } from '../subnets';
import type { HostView } from '../mode';
import type { Step } from '../steps';
import { applyRemovals } from '../teardown';
import { FORWARDING_SYSCTL } from '../forwarding';
import { parseBridgeOptions } from './options';

/**
 * Decides a bridge network's record from the request and the host: the bridge name (given or derived from the id),
 * whether tsnet owns it (an existing bridge of that name is adopted and never deleted) and the gateway addresses
 * to put on it.
 */
export async function planBridgeNetwork(req: CreateNetworkRequest, host: HostView): Promise<BridgeNetworkRecord> {
  const { bridgeName, mtu, ...settings } = parseBridgeOptions(req.driverOptions);
  const bridge = bridgeName ?? bridgeNameFor(req.networkId);
  if (host.claimed.has(bridge)) {
    throw tsnetError('TSN_NETWORK_EXISTS', `bridge "${bridge}" is already used by another tsnet network`);
  }
  const existing = await host.link(bridge);
  if (existing && existing.kind !== 'bridge') {
    throw tsnetError('TSN_INVALID_OPTION', `bridge name "${bridge}": a ${existing.kind || 'non-bridge'} link of that name exists`);
  }
  const ipv6 = req.enableIPv6 ? req.ipv6.map(subnetRecord) : [];
  const gateways = bridgeGateways(settings.inhibitIpv4, req.ipv4, ipv6);
  return {
    id: req.networkId,
    mode: 'bridge',
    bridge,
    ownsBridge: existing === undefined,
    // On an adopted bridge only the addresses it lacks are tsnet's to add and later remove.
    bridgeAddresses: gateways.filter((g) => !existing?.addresses.includes(g)),
    mac: existing?.mac ?? randomMac(),
    ...(mtu !== undefined ? { mtu } : {}),
    ipv4: req.ipv4.map(subnetRecord),
    ipv6,
    enableIPv6: req.enableIPv6,
    internal: req.internal,
    options: { ...req.driverOptions },
    settings,
    createdAt: new Date().toISOString(),
  };
}

/** What the firewall enforces for the network. */
export function bridgeFirewallView(net: BridgeNetworkRecord): FwNetwork {
  return {
    bridge: net.bridge,
    internal: net.internal,
    icc: net.settings.enableIcc,
    masquerade: net.settings.enableMasquerade,
  };
}

/**
 * Host-wide forwarding a non-internal network needs (dockerd turns it on only with its own firewall enabled). The
 * driver reads these before they run (driver/forwarding.ts): forwarding tsnet turns on is guarded.
 */
function forwardingChanges(net: BridgeNetworkRecord): KernelChange[] {
  if (net.internal) return [];
  return [
    { op: 'sysctl.set', key: FORWARDING_SYSCTL.ipv4, value: '1' },
    ...(net.enableIPv6 ? [{ op: 'sysctl.set' as const, key: FORWARDING_SYSCTL.ipv6, value: '1' }] : []),
  ];
}

/** The bridge's kernel pipeline (links, addresses, sysctls), in the order the kernel needs it. */
function bridgeKernelSteps(net: BridgeNetworkRecord): Step[] {
  const sysctl6 = (name: string, value: string): KernelChange => ({ op: 'sysctl.set', key: `net/ipv6/conf/${net.bridge}/${name}`, value });
  const v6 = (cidr: string) => cidr.includes(':');
  const addrs = (pred: (cidr: string) => boolean): KernelChange[] =>
    net.bridgeAddresses.filter(pred).map((cidr) => ({ op: 'addr.add', dev: net.bridge, cidr }));
  const steps: Step[] = [];
  if (net.ownsBridge) {
    // A fixed MAC keeps the bridge's address from following its lowest-numbered port as endpoints come and go.
    steps.push({ name: 'create bridge', changes: [{ op: 'bridge.add', name: net.bridge, mac: net.mac, ...(net.mtu ? { mtu: net.mtu } : {}) }] });
  }
  steps.push({ name: 'ipv4 gateways', changes: addrs((c) => !v6(c)) });
  steps.push({ name: 'bridge up', changes: [{ op: 'link.up', name: net.bridge }] });
  if (net.ownsBridge) {
    // IPv6 off on IPv4-only networks (no link-local, no RAs: CVE-2024-32473); on IPv6 ones, never accept RAs.
    // disable_ipv6=0 must precede the IPv6 addresses on hosts whose default is 1. route_localnet lets ports
    // published on 127.0.0.1 reach the bridge (the firewall drops 127/8 arriving from containers).
    steps.push({
      name: 'bridge sysctls',
      changes: [
        ...(net.enableIPv6 ? [sysctl6('disable_ipv6', '0'), sysctl6('accept_ra', '0')] : [sysctl6('disable_ipv6', '1')]),
        { op: 'sysctl.set', key: `net/ipv4/conf/${net.bridge}/route_localnet`, value: '1' },
      ],
    });
  }
  steps.push({ name: 'ipv6 gateways', changes: addrs(v6) });
  steps.push({ name: 'forwarding', changes: forwardingChanges(net) });
  return steps;
}

/** The whole setup pipeline: kernel steps, then the network's firewall elements. */
export function bridgeSetupSteps(net: BridgeNetworkRecord, firewall: Firewall): Step[] {
  const view = bridgeFirewallView(net);
  return [
    ...bridgeKernelSteps(net),
    { name: 'firewall: network elements', run: () => firewall.addNetwork(view), undo: () => firewall.removeNetwork(view) },
  ];
}

/**
 * After a restart: a missing bridge tsnet owns is rebuilt whole; an existing one gets back lost gateway addresses,
 * its up state, and always its sysctls and forwarding: they cannot be read back cheaply, a crash may have come
 * before they were written (an IPv4-only bridge left with IPv6 and RAs on), and writing them again is idempotent.
 * An adopted bridge that vanished is the operator's to restore (the reconcile plan says so). (The firewall is
 * synced by the driver.)
 */
export function bridgeRepairSteps(net: BridgeNetworkRecord, link: LinkInfo | undefined): Step[] {
  if (!link) return net.ownsBridge ? bridgeKernelSteps(net) : [];
  const lost = net.bridgeAddresses.filter((c) => !link.addresses.includes(c));
  return bridgeKernelSteps({ ...net, bridgeAddresses: lost }).filter(
    (s) => 'changes' in s && s.name !== 'create bridge' && (s.name === 'bridge up' ? !link.up : s.changes.length > 0),
  );
}

/** The firewall elements, and on an adopted bridge the addresses tsnet added (an owned bridge goes whole). */
export async function releaseBridgeNetwork(net: BridgeNetworkRecord, kernel: Kernel): Promise<void> {
  await kernel.firewall.removeNetwork(bridgeFirewallView(net));
  if (net.ownsBridge) return;
  await applyRemovals(kernel, net.bridgeAddresses.map((cidr) => ({ op: 'addr.del', dev: net.bridge, cidr })));
}
