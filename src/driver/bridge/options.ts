import ipaddr from 'ipaddr.js';
import { tsnetError } from '../../errors';
import { validateIfName } from '../../kernel/names';
import type { BridgeSettings } from '../../store/records';
import { IFACE_PREFIX_OPTION, parseBool, parseIfacePrefix } from '../option-values';

/** Option names shared with Docker's bridge driver, so `-o` works the same on `-d bridge` and `-d tsnet`. */
export const OPT = {
  mode: 'mode',
  bridgeName: 'com.docker.network.bridge.name',
  mtu: 'com.docker.network.driver.mtu',
  enableIcc: 'com.docker.network.bridge.enable_icc',
  enableMasquerade: 'com.docker.network.bridge.enable_ip_masquerade',
  hostBindingIpv4: 'com.docker.network.bridge.host_binding_ipv4',
  inhibitIpv4: 'com.docker.network.bridge.inhibit_ipv4',
  ifacePrefix: IFACE_PREFIX_OPTION,
} as const;

/** A bridge network's options: the settings its record keeps, plus what decides its bridge. */
export interface BridgeOptions extends BridgeSettings {
  bridgeName?: string;
  mtu?: number;
}

/**
 * Validates `-o` options of a bridge network (the mode registry already chose mode=bridge); a key that is not a
 * bridge option is an error naming it and the mode.
 */
export function parseBridgeOptions(generic: Record<string, string>): BridgeOptions {
  const known = new Set<string>(Object.values(OPT));
  for (const key of Object.keys(generic)) {
    if (!known.has(key)) {
      throw tsnetError('TSN_INVALID_OPTION', `unknown option "${key}" for mode=bridge (known: ${[...known].join(', ')})`);
    }
  }
  const get = (k: string): string | undefined => generic[k];
  const out: BridgeOptions = {
    enableIcc: true,
    enableMasquerade: true,
    hostBindingIpv4: '0.0.0.0',
    inhibitIpv4: false,
    ifacePrefix: 'eth',
  };
  const name = get(OPT.bridgeName);
  if (name !== undefined) out.bridgeName = validateIfName(name, `option ${OPT.bridgeName}`);
  const mtu = get(OPT.mtu);
  if (mtu !== undefined) {
    const n = Number(mtu);
    if (!/^\d+$/.test(mtu) || n < 68 || n > 65535) {
      throw tsnetError('TSN_INVALID_OPTION', `option ${OPT.mtu}="${mtu}": expected an integer from 68 to 65535`);
    }
    out.mtu = n;
  }
  const icc = get(OPT.enableIcc);
  if (icc !== undefined) out.enableIcc = parseBool(OPT.enableIcc, icc);
  const masq = get(OPT.enableMasquerade);
  if (masq !== undefined) out.enableMasquerade = parseBool(OPT.enableMasquerade, masq);
  const inhibit = get(OPT.inhibitIpv4);
  if (inhibit !== undefined) out.inhibitIpv4 = parseBool(OPT.inhibitIpv4, inhibit);
  const hostIp = get(OPT.hostBindingIpv4);
  if (hostIp !== undefined) {
    if (!ipaddr.IPv4.isValidFourPartDecimal(hostIp)) {
      throw tsnetError('TSN_INVALID_OPTION', `option ${OPT.hostBindingIpv4}="${hostIp}": expected an IPv4 address`);
    }
    out.hostBindingIpv4 = hostIp;
  }
  const prefix = get(OPT.ifacePrefix);
  if (prefix !== undefined) out.ifacePrefix = parseIfacePrefix(prefix);
  return out;
}
