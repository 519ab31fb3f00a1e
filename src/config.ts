import fs from 'node:fs';
import path from 'node:path';
import { isIP } from 'node:net';
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { errnoCode, tsnetError } from './errors';

/** Everything tsnet can be told at start, from flags (which win) and TSNET_* environment variables. */
export interface Config {
  /** Unix socket dockerd connects to. */
  socket: string;
  /**
   * The name dockerd knows tsnet by (`-d NAME`), as it shows in Docker's API: a legacy plugin's socket file name
   * without `.sock` (the default), a managed plugin's reference (`tsnet:latest`), whose socket is always `tsnet.sock`.
   */
  driverName: string;
  /** Where sysctls are read and written: /proc/sys, or the host's /proc/sys mounted elsewhere (managed plugin). */
  sysctlRoot: string;
  /** Directory of the state store. */
  stateDir: string;
  /** Unix socket (mode 0600) of the read-mostly admin API the `tsnet` CLI talks to (src/admin/). */
  adminSocket: string;
  logLevel: string;
  /** Pools for networks created without `--subnet`, like dockerd's `--default-address-pool`. */
  defaultPoolsV4: DefaultPoolSpec[];
  defaultPoolsV6: DefaultPoolSpec[];
  /** Packet mark bit tsnet sets on traffic it accepts, matched by its rule in dockerd's DOCKER-USER chain and its twin in FORWARD. */
  fwMark: number;
  /** Name of tsnet's nftables table (family inet). */
  nftTable: string;
  /** Docker API unix socket tsnet reads containers and events from (never on a plugin call's path). */
  dockerSocket: string;
  /**
   * How long a network, endpoint or address tsnet holds must be missing from Docker's API, continuously, before
   * tsnet removes it as forgotten by dockerd (src/reclaim/).
   */
  reclaimGraceMs: number;
  dns: DnsConfig;
  /** Where `GET /metrics` is served over HTTP; undefined (the default): nowhere but the admin socket. */
  metricsListen?: { host: string; port: number };
}

/** tsnet's DNS server (src/dns/). */
export interface DnsConfig {
  /** False with `--dns-listen none`: no listener, and Docker's API is still followed for later steps. */
  enabled: boolean;
  /** Lower-case, no trailing dot (default `tsnet`): names are NAME.NETWORK.ZONE. */
  zone: string;
  port: number;
  /** Listen on each tsnet bridge network's gateway address(es). */
  onGateways: boolean;
  /** Further host addresses to listen on (for the host and the LAN). */
  hostAddresses: string[];
  /** Also listen on `--internal` networks' gateways (queries from them are still never forwarded). */
  onInternal: boolean;
  /** Upstream resolvers; `resolv.conf` reads {@link DnsConfig.resolvConf} (re-read when it changes). */
  upstreams: DnsUpstream[] | 'resolv.conf';
  resolvConf: string;
  /** TTL of tsnet's own answers, seconds. */
  ttl: number;
}

export interface DnsUpstream {
  address: string;
  port: number;
}

export interface DefaultPoolSpec {
  /** CIDR the pools are cut from. */
  base: string;
  /** Prefix length of each pool. */
  size: number;
}

export const DEFAULT_SOCKET = '/run/docker/plugins/tsnet.sock';
export const DEFAULT_STATE_DIR = '/var/lib/tsnet';
export const DEFAULT_ADMIN_SOCKET = '/run/tsnet/admin.sock';
/** Read when it exists and neither --config nor TSNET_CONFIG names another. */
export const DEFAULT_CONFIG_FILE = '/etc/tsnet/config.json';
export const DEFAULT_SYSCTL_ROOT = '/proc/sys';
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
export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';
export const DEFAULT_DNS_ZONE = 'tsnet';
export const DEFAULT_DNS_TTL = 5;
/** Longer than dockerd's ~15 s of retrying a Leave/DeleteEndpoint a plugin did not answer. */
export const DEFAULT_RECLAIM_GRACE_S = 60;

export const usage = `usage: tsnet [daemon] [options]     (tsnet help: the subcommands)
  --config FILE                JSON settings keyed by these long flag names (default ${DEFAULT_CONFIG_FILE}
                               if it exists; env TSNET_CONFIG); flags > env > file > defaults
  --socket PATH                unix socket to serve (default ${DEFAULT_SOCKET}; env TSNET_SOCKET)
  --driver-name NAME           the driver name dockerd uses (default the socket's file name without .sock;
                               a managed plugin: its reference, e.g. tsnet:latest; env TSNET_DRIVER_NAME)
  --sysctl-root DIR            where sysctls are read and written (default ${DEFAULT_SYSCTL_ROOT}; env TSNET_SYSCTL_ROOT)
  --state-dir DIR              state store directory (default ${DEFAULT_STATE_DIR}; env TSNET_STATE_DIR)
  --admin-socket PATH          admin socket of the tsnet CLI, mode 0600 (default ${DEFAULT_ADMIN_SOCKET};
                               env TSNET_ADMIN_SOCKET)
  --log-level LEVEL            error|warn|info|debug (default info; env LOG_LEVEL)
  --default-address-pool SPEC  base=CIDR,size=N for IPv4 networks without --subnet; repeatable
                               (env TSNET_DEFAULT_ADDRESS_POOLS, ';'-separated)
  --default-address-pool-v6 SPEC  the same for --ipv6 networks (env TSNET_DEFAULT_ADDRESS_POOLS_V6)
  --fw-mark HEX                mark bit for accepted forwarded traffic (default 0x${DEFAULT_FW_MARK.toString(16)})
  --nft-table NAME             tsnet's nftables table, family inet (default tsnet; env TSNET_NFT_TABLE)
  --docker-socket PATH         Docker API socket for names and events (default ${DEFAULT_DOCKER_SOCKET};
                               env DOCKER_HOST=unix://PATH)
  --reclaim-grace SECONDS      remove what dockerd no longer has after it was missing this long
                               (default ${DEFAULT_RECLAIM_GRACE_S}; env TSNET_RECLAIM_GRACE)
  --dns-listen WHERE           gateways | ADDRESS | none; repeatable (default gateways: each bridge network's
                               gateway; env TSNET_DNS_LISTEN, ','-separated)
  --dns-port N                 port of every DNS listener (default 53; env TSNET_DNS_PORT)
  --dns-zone ZONE              zone of NAME.NETWORK.ZONE (default ${DEFAULT_DNS_ZONE}; env TSNET_DNS_ZONE)
  --dns-internal               also listen on --internal networks' gateways (never forwarding for them)
  --dns-upstream ADDR[:PORT]   resolver for other names; repeatable; none disables forwarding
                               (default the nameservers of --dns-resolv-conf; env TSNET_DNS_UPSTREAMS, ','-separated)
  --dns-resolv-conf PATH       where default upstreams come from (default /etc/resolv.conf)
  --dns-ttl SECONDS            TTL of tsnet's own answers (default ${DEFAULT_DNS_TTL}; env TSNET_DNS_TTL)
  --metrics-listen HOST:PORT   also serve Prometheus metrics at http://HOST:PORT/metrics ([V6]:PORT; default off;
                               env TSNET_METRICS_LISTEN)
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

/** Undefined when the variable is unset or empty (the layer below then applies). */
function envList(name: string): string[] | undefined {
  const v = process.env[name];
  return v ? v.split(';').filter((s) => s.trim() !== '') : undefined;
}

/** Every long flag; a config file's keys are these names (but `config` and `help`). */
const OPTIONS = {
  socket: { type: 'string' },
  'driver-name': { type: 'string' },
  'sysctl-root': { type: 'string' },
  'state-dir': { type: 'string' },
  'log-level': { type: 'string' },
  'default-address-pool': { type: 'string', multiple: true },
  'default-address-pool-v6': { type: 'string', multiple: true },
  'fw-mark': { type: 'string' },
  'nft-table': { type: 'string' },
  'docker-socket': { type: 'string' },
  'reclaim-grace': { type: 'string' },
  'dns-listen': { type: 'string', multiple: true },
  'dns-port': { type: 'string' },
  'dns-zone': { type: 'string' },
  'dns-internal': { type: 'boolean' },
  'dns-upstream': { type: 'string', multiple: true },
  'dns-resolv-conf': { type: 'string' },
  'dns-ttl': { type: 'string' },
  'metrics-listen': { type: 'string' },
  'admin-socket': { type: 'string' },
  config: { type: 'string' },
  help: { type: 'boolean' },
} as const satisfies ParseArgsOptionsConfig;

const OPTION_TYPES: Readonly<Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>> = OPTIONS;

type OptionValues = ReturnType<typeof parseArgs<{ args: string[]; options: typeof OPTIONS; strict: true }>>['values'];

/**
 * The config file's settings as flag values: a JSON object keyed by long flag names; a number is taken as its text
 * (`"dns-port": 5353`), a repeatable flag takes a string or an array of strings. Missing at the default path: no
 * settings; missing where named (`--config`, TSNET_CONFIG): an error.
 */
export function readConfigFile(file: string | undefined): OptionValues {
  const named = file !== undefined;
  const where = path.resolve(file ?? DEFAULT_CONFIG_FILE);
  let text: string;
  try {
    text = fs.readFileSync(where, 'utf8');
  } catch (err) {
    if (!named && errnoCode(err) === 'ENOENT') return {};
    throw tsnetError('TSN_INVALID_OPTION', `config file ${where}: cannot be read`, err);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw tsnetError('TSN_INVALID_OPTION', `config file ${where}: not JSON`, err);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw tsnetError('TSN_INVALID_OPTION', `config file ${where}: expected a JSON object of flag names`);
  const values: Record<string, string | string[] | boolean> = {};
  for (const [key, value] of Object.entries(parsed)) {
    const bad = (expected: string) => tsnetError('TSN_INVALID_OPTION', `config file ${where}: key "${key.slice(0, 64)}" = ${JSON.stringify(value).slice(0, 120)}: expected ${expected}`);
    const opt = key !== 'config' && key !== 'help' && Object.hasOwn(OPTION_TYPES, key) ? OPTION_TYPES[key] : undefined;
    if (!opt) throw tsnetError('TSN_INVALID_OPTION', `config file ${where}: unknown key "${key.slice(0, 64)}" (keys are the long flag names, e.g. "state-dir")`);
    const scalar = (v: unknown) => (typeof v === 'string' ? v : typeof v === 'number' && Number.isFinite(v) ? String(v) : undefined);
    if (opt.type === 'boolean') {
      if (typeof value !== 'boolean') throw bad('true or false');
      values[key] = value;
    } else if (opt.multiple) {
      const list = (Array.isArray(value) ? value : [value]).map(scalar);
      if (list.some((v) => v === undefined)) throw bad('a string or an array of strings');
      values[key] = list.flatMap((v) => v ?? []);
    } else {
      const v = scalar(value);
      if (v === undefined) throw bad('a string or a number');
      values[key] = v;
    }
  }
  return values;
}

/** Precedence: flags, then TSNET_* environment, then the config file, then the defaults. */
export function loadConfig(argv: string[]): Config | 'help' {
  const { values: flags } = parseArgs({ args: argv, options: OPTIONS, strict: true });
  if (flags.help) return 'help';
  const file = readConfigFile(flags.config ?? nonEmpty(process.env.TSNET_CONFIG));
  const pools4 = flags['default-address-pool'] ?? envList('TSNET_DEFAULT_ADDRESS_POOLS') ?? file['default-address-pool'] ?? [];
  const pools6 = flags['default-address-pool-v6'] ?? envList('TSNET_DEFAULT_ADDRESS_POOLS_V6') ?? file['default-address-pool-v6'] ?? [];
  const markText = flags['fw-mark'] ?? process.env.TSNET_FW_MARK ?? file['fw-mark'];
  const fwMark = markText === undefined ? DEFAULT_FW_MARK : Number(markText);
  if (!Number.isInteger(fwMark) || fwMark <= 0 || fwMark > 0xffffffff || (fwMark & (fwMark - 1)) !== 0) {
    throw tsnetError('TSN_INVALID_OPTION', `fw-mark "${markText}": expected a single bit, e.g. 0x2000000`);
  }
  const nftTable = flags['nft-table'] ?? process.env.TSNET_NFT_TABLE ?? file['nft-table'] ?? 'tsnet';
  if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(nftTable)) {
    throw tsnetError('TSN_INVALID_OPTION', `nft-table "${nftTable}": expected a letter then up to 31 letters, digits or '_'`);
  }
  const socket = path.resolve(flags.socket ?? process.env.TSNET_SOCKET ?? file.socket ?? DEFAULT_SOCKET);
  const driverName = flags['driver-name'] ?? nonEmpty(process.env.TSNET_DRIVER_NAME) ?? file['driver-name'] ?? driverNameOf(socket);
  // A Docker plugin reference: [registry[:port]/]path[:tag], nothing else (it is logged and compared, never run).
  if (!/^[A-Za-z0-9][A-Za-z0-9._:/-]{0,254}$/.test(driverName)) {
    throw tsnetError('TSN_INVALID_OPTION', `driver-name "${driverName.slice(0, 80)}": expected a plugin name or reference such as tsnet:latest`);
  }
  const metricsListen = flags['metrics-listen'] ?? process.env.TSNET_METRICS_LISTEN ?? file['metrics-listen'];
  return {
    ...(metricsListen === undefined || metricsListen === '' ? {} : { metricsListen: parseMetricsListen(metricsListen) }),
    socket,
    driverName,
    sysctlRoot: path.resolve(flags['sysctl-root'] ?? nonEmpty(process.env.TSNET_SYSCTL_ROOT) ?? file['sysctl-root'] ?? DEFAULT_SYSCTL_ROOT),
    stateDir: path.resolve(flags['state-dir'] ?? process.env.TSNET_STATE_DIR ?? file['state-dir'] ?? DEFAULT_STATE_DIR),
    adminSocket: path.resolve(flags['admin-socket'] ?? process.env.TSNET_ADMIN_SOCKET ?? file['admin-socket'] ?? DEFAULT_ADMIN_SOCKET),
    logLevel: flags['log-level'] ?? process.env.LOG_LEVEL ?? file['log-level'] ?? 'info',
    defaultPoolsV4: pools4.length ? pools4.map(parseDefaultPool) : DEFAULT_POOLS_V4,
    defaultPoolsV6: pools6.length ? pools6.map(parseDefaultPool) : DEFAULT_POOLS_V6,
    fwMark,
    nftTable,
    dockerSocket: dockerSocket(flags['docker-socket'], file['docker-socket']),
    reclaimGraceMs:
      1000 * intOption('reclaim-grace', flags['reclaim-grace'] ?? process.env.TSNET_RECLAIM_GRACE ?? file['reclaim-grace'], DEFAULT_RECLAIM_GRACE_S, 0, 86400),
    dns: dnsConfig({
      listen: flags['dns-listen'] ?? envCommaList('TSNET_DNS_LISTEN') ?? file['dns-listen'] ?? [],
      port: flags['dns-port'] ?? process.env.TSNET_DNS_PORT ?? file['dns-port'],
      zone: flags['dns-zone'] ?? process.env.TSNET_DNS_ZONE ?? file['dns-zone'],
      internal: flags['dns-internal'] ?? (process.env.TSNET_DNS_INTERNAL === undefined ? undefined : process.env.TSNET_DNS_INTERNAL === '1') ?? file['dns-internal'] ?? false,
      upstreams: flags['dns-upstream'] ?? envCommaList('TSNET_DNS_UPSTREAMS') ?? file['dns-upstream'] ?? [],
      resolvConf: flags['dns-resolv-conf'] ?? process.env.TSNET_DNS_RESOLV_CONF ?? file['dns-resolv-conf'],
      ttl: flags['dns-ttl'] ?? process.env.TSNET_DNS_TTL ?? file['dns-ttl'],
    }),
  };
}

const nonEmpty = (v: string | undefined) => (v === '' ? undefined : v);

/** The driver name of a legacy plugin's socket: `/run/docker/plugins/tsnet.sock` → `tsnet`. */
export function driverNameOf(socket: string): string {
  return path.basename(socket, '.sock');
}

function envCommaList(name: string): string[] | undefined {
  const v = process.env[name];
  return v ? v.split(',').map((s) => s.trim()).filter((s) => s !== '') : undefined;
}

function dockerSocket(flag: string | undefined, fromFile: string | undefined): string {
  if (flag !== undefined) return path.resolve(flag);
  const host = process.env.DOCKER_HOST;
  if (host === undefined || host === '') return path.resolve(fromFile ?? DEFAULT_DOCKER_SOCKET);
  if (!host.startsWith('unix://')) {
    throw tsnetError('TSN_INVALID_OPTION', `DOCKER_HOST "${host}": tsnet reads Docker only over a unix socket (unix://PATH)`);
  }
  return path.resolve(host.slice('unix://'.length));
}

interface DnsFlags {
  listen: string[];
  port: string | undefined;
  zone: string | undefined;
  internal: boolean;
  upstreams: string[];
  resolvConf: string | undefined;
  ttl: string | undefined;
}

function dnsConfig(f: DnsFlags): DnsConfig {
  const listen = f.listen.length ? f.listen : ['gateways'];
  const none = listen.includes('none');
  if (none && listen.length > 1) {
    throw tsnetError('TSN_INVALID_OPTION', `dns-listen "${listen.join(',')}": none cannot be combined with other listeners`);
  }
  const hostAddresses = listen.filter((l) => l !== 'gateways' && l !== 'none');
  for (const a of hostAddresses) {
    if (!isIP(a)) throw tsnetError('TSN_INVALID_OPTION', `dns-listen "${a}": expected gateways, none or an IP address`);
    // A wildcard would answer on every interface: the LAN's and internal networks' gateways too.
    if (/^(0\.0\.0\.0|::|0*:(0*:)*0*)$/.test(a)) throw tsnetError('TSN_INVALID_OPTION', `dns-listen "${a}": name the addresses to listen on, not a wildcard`);
  }
  const zone = (f.zone ?? DEFAULT_DNS_ZONE).toLowerCase().replace(/\.$/, '');
  if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/.test(zone) || zone.length > 200) {
    throw tsnetError('TSN_INVALID_OPTION', `dns-zone "${f.zone}": expected a domain name such as tsnet or dns.example.org`);
  }
  let upstreams: DnsConfig['upstreams'] = 'resolv.conf';
  if (f.upstreams.includes('none')) {
    if (f.upstreams.length > 1) throw tsnetError('TSN_INVALID_OPTION', `dns-upstream "${f.upstreams.join(',')}": none cannot be combined with upstreams`);
    upstreams = [];
  } else if (f.upstreams.length) {
    upstreams = f.upstreams.map(parseUpstream);
  }
  return {
    enabled: !none,
    zone,
    port: intOption('dns-port', f.port, 53, 1, 65535),
    onGateways: listen.includes('gateways'),
    hostAddresses,
    onInternal: f.internal,
    upstreams,
    resolvConf: path.resolve(f.resolvConf ?? '/etc/resolv.conf'),
    ttl: intOption('dns-ttl', f.ttl, DEFAULT_DNS_TTL, 0, 86400),
  };
}

function intOption(name: string, text: string | undefined, dflt: number, min: number, max: number): number {
  if (text === undefined) return dflt;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) throw tsnetError('TSN_INVALID_OPTION', `${name} "${text}": expected an integer from ${min} to ${max}`);
  return n;
}

/** `ADDR`, `ADDR:PORT` or `[V6]:PORT`. */
export function parseUpstream(spec: string): DnsUpstream {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(spec);
  const colon = spec.lastIndexOf(':');
  const [address, port] = bracketed
    ? [bracketed[1], bracketed[2]]
    : isIP(spec) === 6 || colon < 0
      ? [spec, undefined]
      : [spec.slice(0, colon), spec.slice(colon + 1)];
  if (!isIP(address)) {
    throw tsnetError('TSN_INVALID_OPTION', `dns-upstream "${spec}": expected ADDRESS, ADDRESS:PORT or [IPv6]:PORT`);
  }
  return { address, port: intOption('dns-upstream port', port, 53, 1, 65535) };
}

/** `HOST:PORT` or `[V6]:PORT`, HOST an IP address: the metrics listener binds exactly what it is told. */
export function parseMetricsListen(spec: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(spec) ?? /^([^:[\]]+):(\d+)$/.exec(spec);
  if (!m || !isIP(m[1])) throw tsnetError('TSN_INVALID_OPTION', `metrics-listen "${spec}": expected IPV4:PORT or [IPV6]:PORT`);
  return { host: m[1], port: intOption('metrics-listen port', m[2], 0, 1, 65535) };
}
