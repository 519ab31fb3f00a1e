import { tsnetError } from '../errors';

/** Value syntaxes shared by every mode's `-o` options, so one option reads the same whatever the mode. */

/** The option naming the prefix dockerd gives the container's interface (Docker's own name, every driver). */
export const IFACE_PREFIX_OPTION = 'com.docker.network.container_iface_prefix';

/** ` (mode=NAME)` after an option's value, where the option is one mode's (the bridge's keep their old messages). */
const ofMode = (mode?: string) => (mode === undefined ? '' : ` (mode=${mode})`);

export function parseBool(key: string, v: string, mode?: string): boolean {
  if (/^(1|t|true)$/i.test(v)) return true;
  if (/^(0|f|false)$/i.test(v)) return false;
  throw tsnetError('TSN_INVALID_OPTION', `option ${key}="${v}"${ofMode(mode)}: expected true or false`);
}

export function parseIfacePrefix(prefix: string, mode?: string): string {
  // dockerd appends the interface index, so leave room for it within IFNAMSIZ.
  if (!/^[a-z][a-z0-9]{0,11}$/.test(prefix)) {
    throw tsnetError(
      'TSN_INVALID_OPTION',
      `option ${IFACE_PREFIX_OPTION}="${prefix}"${ofMode(mode)}: expected 1-12 lowercase letters/digits starting with a letter`,
    );
  }
  return prefix;
}

/** Endpoint options are dockerd's own com.docker.* keys; no tsnet mode takes a `--driver-opt` of its own yet. */
export function checkEndpointOptions(options: Record<string, unknown>, mode: string): void {
  for (const key of Object.keys(options)) {
    if (!key.startsWith('com.docker.')) {
      throw tsnetError('TSN_INVALID_OPTION', `unknown endpoint option "${key}" for a tsnet ${mode} network`);
    }
  }
}

/** One of `allowed` (`def` when the option is absent); anything else is refused naming the option and the mode. */
export function pickOption<T extends string>(mode: string, key: string, value: string | undefined, allowed: readonly T[], def: T): T {
  if (value === undefined) return def;
  const hit = allowed.find((a) => a === value);
  if (hit === undefined) throw tsnetError('TSN_INVALID_OPTION', `option ${key}="${value}"${ofMode(mode)}: expected one of ${allowed.join(', ')}`);
  return hit;
}
