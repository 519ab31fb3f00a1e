import path from 'node:path';
import { parseArgs } from 'node:util';
import { tsnetError } from './errors';

/** Everything tsnet can be told at start, from flags (which win) and TSNET_* environment variables. */
export interface Config {
  /** Unix socket dockerd connects to; its file name without `.sock` is the driver name (`-d tsnet`). */
  socket: string;
  /** Directory of the state store. */
  stateDir: string;
  logLevel: string;
  /** Pools for networks created without `--subnet`, like dockerd's `--default-address-pool`. */
  defaultPoolsV4: DefaultPoolSpec[];
  defaultPoolsV6: DefaultPoolSpec[];
  /** Packet mark bit tsnet sets on traffic it accepts, matched by its one rule in dockerd's DOCKER-USER chain. */
  fwMark: number;
  /** Name of tsnet's nftables table (family inet). */
  nftTable: string;
}

export interface DefaultPoolSpec {
  /** CIDR the pools are cut from. */
  base: string;
  /** Prefix length of each pool. */
  size: number;
}

export const DEFAULT_SOCKET = '/run/docker/plugins/tsnet.sock';
export const DEFAULT_STATE_DIR = '/var/lib/tsnet';
/** The same defaults as dockerd (172.17-31.0.0/16 and 192.168.0.0/16 in /20s). */
export const DEFAULT_POOLS_V4: DefaultPoolSpec[] = [
  { base: '172.17.0.0/16', size: 16 },
  { base: '172.18.0.0/15', size: 16 },
  { base: '172.20.0.0/14', size: 16 },
  { base: '172.24.0.0/13', size: 16 },
  { base: '192.168.0.0/16', size: 20 },
];
/** A ULA /48 carved into /64s for `--ipv6` networks without `--subnet`. */
export const DEFAULT_POOLS_V6: DefaultPoolSpec[] = [{ base: 'fd74:736e:6574::/48', size: 64 }];
export const DEFAULT_FW_MARK = 0x2000000;

export const usage = `usage: tsnet [options]
  --socket PATH                unix socket to serve (default ${DEFAULT_SOCKET}; env TSNET_SOCKET)
  --state-dir DIR              state store directory (default ${DEFAULT_STATE_DIR}; env TSNET_STATE_DIR)
  --log-level LEVEL            error|warn|info|debug (default info; env LOG_LEVEL)
  --default-address-pool SPEC  base=CIDR,size=N for IPv4 networks without --subnet; repeatable
                               (env TSNET_DEFAULT_ADDRESS_POOLS, ';'-separated)
  --default-address-pool-v6 SPEC  the same for --ipv6 networks (env TSNET_DEFAULT_ADDRESS_POOLS_V6)
  --fw-mark HEX                mark bit for accepted forwarded traffic (default 0x${DEFAULT_FW_MARK.toString(16)})
  --nft-table NAME             tsnet's nftables table, family inet (default tsnet; env TSNET_NFT_TABLE)
  --help`;

/** Parses `base=CIDR,size=N` (the syntax of dockerd's --default-address-pool). */
export function parseDefaultPool(spec: string): DefaultPoolSpec {
  const fields = new Map<string, string>();
  for (const part of spec.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) throw tsnetError('TSN_INVALID_OPTION', `default-address-pool "${spec}": expected base=CIDR,size=N`);
    fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const base = fields.get('base');
  const size = Number(fields.get('size'));
  if (!base || !Number.isInteger(size)) {
    throw tsnetError('TSN_INVALID_OPTION', `default-address-pool "${spec}": expected base=CIDR,size=N`);
  }
  return { base, size };
}

function envList(name: string): string[] {
  const v = process.env[name];
  return v ? v.split(';').filter((s) => s.trim() !== '') : [];
}

export function loadConfig(argv: string[]): Config | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      socket: { type: 'string' },
      'state-dir': { type: 'string' },
      'log-level': { type: 'string' },
      'default-address-pool': { type: 'string', multiple: true },
      'default-address-pool-v6': { type: 'string', multiple: true },
      'fw-mark': { type: 'string' },
      'nft-table': { type: 'string' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) return 'help';
  const pools4 = values['default-address-pool'] ?? envList('TSNET_DEFAULT_ADDRESS_POOLS');
  const pools6 = values['default-address-pool-v6'] ?? envList('TSNET_DEFAULT_ADDRESS_POOLS_V6');
  const markText = values['fw-mark'] ?? process.env.TSNET_FW_MARK;
  const fwMark = markText === undefined ? DEFAULT_FW_MARK : Number(markText);
  if (!Number.isInteger(fwMark) || fwMark <= 0 || fwMark > 0xffffffff || (fwMark & (fwMark - 1)) !== 0) {
    throw tsnetError('TSN_INVALID_OPTION', `fw-mark "${markText}": expected a single bit, e.g. 0x2000000`);
  }
  const nftTable = values['nft-table'] ?? process.env.TSNET_NFT_TABLE ?? 'tsnet';
  if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(nftTable)) {
    throw tsnetError('TSN_INVALID_OPTION', `nft-table "${nftTable}": expected a letter then up to 31 letters, digits or '_'`);
  }
  return {
    socket: path.resolve(values.socket ?? process.env.TSNET_SOCKET ?? DEFAULT_SOCKET),
    stateDir: path.resolve(values['state-dir'] ?? process.env.TSNET_STATE_DIR ?? DEFAULT_STATE_DIR),
    logLevel: values['log-level'] ?? process.env.LOG_LEVEL ?? 'info',
    defaultPoolsV4: pools4.length ? pools4.map(parseDefaultPool) : DEFAULT_POOLS_V4,
    defaultPoolsV6: pools6.length ? pools6.map(parseDefaultPool) : DEFAULT_POOLS_V6,
    fwMark,
    nftTable,
  };
}
