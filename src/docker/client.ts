/**
 * A small Docker Engine API client over the daemon's unix socket: version negotiation, containers, networks, and
 * the raw `/events` response (split into events by `events.ts`). Every answer is parsed with zod into the contract
 * types; every request has a timeout; every failure is a `TSN_DOCKER` error with its cause.
 *
 * Never call it on a plugin call's path: dockerd calls tsnet at its boot before its own API answers, so waiting on
 * Docker there deadlocks dockerd. Only the feed (`feed.ts`), running in the background, uses it.
 */
import http from 'node:http';
import { z } from 'zod';
import { TsnetError, tsnetError } from '../errors';
import type { ContainerEndpoints, ContainerInfo, ContainerNetwork, DaemonInfo, NetworkDetail, NetworkInfo } from './contract';

/** The newest API version whose shapes tsnet knows; a newer server is spoken to in this one. */
export const API_NEWEST = '1.47';
/** dockerd 20.10 speaks 1.41; older servers lack fields tsnet reads. */
const API_OLDEST = '1.41';

const DEFAULT_TIMEOUT_MS = 10_000;
/** Cap on one JSON answer (a list of thousands of containers is a few MiB). */
const MAX_BODY_BYTES = 64 * 1024 * 1024;
/** Cap on the daemon's error text kept in a message. */
const MAX_ERROR_TEXT = 200;

/** `major.minor` as a comparable pair; undefined for anything else. */
function parseVersion(v: string): [number, number] | undefined {
  const m = /^(\d{1,4})\.(\d{1,4})$/.exec(v);
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

function compareVersions(a: [number, number], b: [number, number]): number {
  return a[0] - b[0] || a[1] - b[1];
}

const versionSchema = z.object({
  ApiVersion: z.string(),
  MinAPIVersion: z.string().optional(),
  Version: z.string().optional(),
});

/**
 * The API version to speak: min(server's ApiVersion, {@link API_NEWEST}). Refuses a server older than
 * {@link API_OLDEST}, or one whose MinAPIVersion is above the newest version tsnet knows.
 */
export function negotiateVersion(serverApi: string, serverMin: string | undefined): string {
  const server = parseVersion(serverApi);
  if (!server) throw tsnetError('TSN_DOCKER', `Docker reports API version "${serverApi.slice(0, 20)}", expected major.minor`);
  const oldest = parseVersion(API_OLDEST);
  const newest = parseVersion(API_NEWEST);
  if (!oldest || !newest) throw tsnetError('TSN_INTERNAL', 'bad built-in API version');
  if (compareVersions(server, oldest) < 0) {
    throw tsnetError('TSN_DOCKER', `Docker API ${serverApi} is too old: tsnet needs ${API_OLDEST} or newer (Docker 20.10+)`);
  }
  const min = serverMin === undefined ? undefined : parseVersion(serverMin);
  if (min && compareVersions(min, newest) > 0) {
    throw tsnetError('TSN_DOCKER', `Docker requires API ${serverMin ?? ''} or newer; tsnet speaks at most ${API_NEWEST}`);
  }
  return compareVersions(server, newest) < 0 ? serverApi : API_NEWEST;
}

const containerListSchema = z.array(z.object({ Id: z.string() }));

const containerEndpointsSchema = z.array(
  z.object({
    Id: z.string(),
    Names: z.array(z.string()).nullish(),
    NetworkSettings: z.object({ Networks: z.record(z.string(), z.object({ EndpointID: z.string().nullish() })).nullish() }).nullish(),
  }),
);

const endpointSchema = z.object({
  NetworkID: z.string(),
  IPAddress: z.string().nullish(),
  GlobalIPv6Address: z.string().nullish(),
  Aliases: z.array(z.string()).nullish(),
  /** API ≥ 1.44. */
  DNSNames: z.array(z.string()).nullish(),
});

const inspectSchema = z.object({
  Id: z.string(),
  Name: z.string(),
  Config: z.object({ Hostname: z.string().nullish() }).nullish(),
  State: z.object({ Running: z.boolean() }),
  NetworkSettings: z.object({ Networks: z.record(z.string(), endpointSchema).nullish() }).nullish(),
});

const ipamSchema = z.object({
  Driver: z.string().nullish(),
  Config: z
    .array(
      z.object({
        Subnet: z.string().nullish(),
        IPRange: z.string().nullish(),
        Gateway: z.string().nullish(),
        AuxiliaryAddresses: z.record(z.string(), z.string()).nullish(),
      }),
    )
    .nullish(),
});

const networkSchema = z.object({
  Id: z.string(),
  Name: z.string(),
  Driver: z.string(),
  Internal: z.boolean().nullish(),
  IPAM: ipamSchema.nullish(),
});

const networkListSchema = z.array(networkSchema);

const networkInspectSchema = networkSchema.extend({
  Containers: z
    .record(
      z.string(),
      z.object({
        EndpointID: z.string(),
        IPv4Address: z.string().nullish(),
        IPv6Address: z.string().nullish(),
      }),
    )
    .nullish(),
});

const infoSchema = z.object({
  ID: z.string(),
  /** API ≥ 1.48 (Docker 28); older daemons only have iptables. */
  FirewallBackend: z.object({ Driver: z.string() }).nullish(),
  Plugins: z.object({ Network: z.array(z.string()).nullish() }).nullish(),
});

function networkInfo(n: z.infer<typeof networkSchema>): NetworkInfo {
  const info: NetworkInfo = { id: n.Id, name: n.Name, driver: n.Driver, internal: n.Internal ?? false };
  if (n.IPAM?.Driver) info.ipamDriver = n.IPAM.Driver;
  return info;
}

/** Empty strings are Docker's "none". */
function given(s: string | null | undefined): string | undefined {
  return s ? s : undefined;
}

function networkDetail(n: z.infer<typeof networkInspectSchema>): NetworkDetail {
  return {
    ...networkInfo(n),
    ipamDriver: n.IPAM?.Driver ?? '',
    // An entry without a subnet configures nothing (Docker lists the IPAM's pools then).
    ipamConfig: (n.IPAM?.Config ?? []).flatMap((c) => {
      const subnet = given(c.Subnet);
      if (subnet === undefined) return [];
      const ipRange = given(c.IPRange);
      const gateway = given(c.Gateway);
      return [{ subnet, ...(ipRange ? { ipRange } : {}), ...(gateway ? { gateway } : {}), auxAddresses: c.AuxiliaryAddresses ?? {} }];
    }),
    endpoints: Object.values(n.Containers ?? {}).map((e) => {
      const ipv4 = given(e.IPv4Address);
      const ipv6 = given(e.IPv6Address);
      return { endpointId: e.EndpointID, ...(ipv4 ? { ipv4 } : {}), ...(ipv6 ? { ipv6 } : {}) };
    }),
  };
}

const errorBodySchema = z.object({ message: z.string() });

/**
 * A container's names on one network beyond its own: the union of `Aliases` and (API ≥ 1.44) `DNSNames`,
 * lower-cased, deduplicated, without its name and hostname (records of their own). Both API shapes give the same
 * set: 20.10 puts the short ID in `Aliases`, newer daemons put it in `DNSNames` (1.45 drops it from `Aliases`).
 */
function endpointAliases(name: string, hostname: string, ep: z.infer<typeof endpointSchema>): string[] {
  const own = new Set([name.toLowerCase(), hostname.toLowerCase()]);
  const out = new Set<string>();
  for (const a of [...(ep.Aliases ?? []), ...(ep.DNSNames ?? [])]) {
    const lower = a.toLowerCase();
    if (lower !== '' && !own.has(lower)) out.add(lower);
  }
  return [...out].sort();
}

/** Parses a container inspect answer; undefined when the container is not running. */
function containerFromInspect(body: unknown): ContainerInfo | undefined {
  const c = inspectSchema.parse(body);
  if (!c.State.Running) return undefined;
  const name = c.Name.replace(/^\//, '');
  const hostname = c.Config?.Hostname ?? '';
  const networks: ContainerNetwork[] = Object.entries(c.NetworkSettings?.Networks ?? {})
    .map(([networkName, ep]) => {
      const n: ContainerNetwork = { networkId: ep.NetworkID, networkName, aliases: endpointAliases(name, hostname, ep) };
      if (ep.IPAddress) n.ipv4 = ep.IPAddress;
      if (ep.GlobalIPv6Address) n.ipv6 = ep.GlobalIPv6Address;
      return n;
    })
    .sort((a, b) => (a.networkName < b.networkName ? -1 : a.networkName > b.networkName ? 1 : 0));
  return { id: c.Id, name, hostname, networks };
}

export interface DockerClientOptions {
  /** The daemon's unix socket (`--docker-socket`). */
  socketPath: string;
  /** Per request: until the whole answer (or, for `/events`, its headers) arrived. */
  timeoutMs?: number;
}

interface Answer {
  status: number;
  body: Buffer;
}

/** See the module comment: background use only. */
export class DockerClient {
  private readonly socketPath: string;
  private readonly timeoutMs: number;
  private version: string | undefined;

  constructor(opts: DockerClientOptions) {
    this.socketPath = opts.socketPath;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** The negotiated API version, once {@link negotiate} succeeded. */
  get apiVersion(): string | undefined {
    return this.version;
  }

  /** `GET /version` (unversioned) and picks the version later calls use; call it again after every reconnect. */
  async negotiate(signal?: AbortSignal): Promise<string> {
    const v = this.parse('/version', versionSchema, await this.getOk('/version', signal));
    this.version = negotiateVersion(v.ApiVersion, v.MinAPIVersion);
    return this.version;
  }

  /** IDs of the running containers. */
  async listContainerIds(signal?: AbortSignal): Promise<string[]> {
    const path = this.versioned('/containers/json');
    return this.parse(path, containerListSchema, await this.getOk(path, signal)).map((c) => c.Id);
  }

  /** The running containers with their names and the endpoint ids of their networks, from one listing. */
  async listContainerEndpoints(signal?: AbortSignal): Promise<ContainerEndpoints[]> {
    const path = this.versioned('/containers/json');
    return this.parse(path, containerEndpointsSchema, await this.getOk(path, signal)).map((c) => ({
      id: c.Id,
      name: (c.Names?.[0] ?? '').replace(/^\//, ''),
      endpointIds: Object.values(c.NetworkSettings?.Networks ?? {}).flatMap((n) => (n.EndpointID ? [n.EndpointID] : [])),
    }));
  }

  /** `GET /_ping` (unversioned): true when the daemon answers OK. */
  async ping(signal?: AbortSignal): Promise<boolean> {
    const answer = await this.get('/_ping', signal);
    return answer.status === 200 && answer.body.toString('utf8').startsWith('OK');
  }

  /** A running container, or undefined when it is gone (404) or not running. */
  async inspectContainer(id: string, signal?: AbortSignal): Promise<ContainerInfo | undefined> {
    const path = this.versioned(`/containers/${encodeURIComponent(id)}/json`);
    const answer = await this.get(path, signal);
    if (answer.status === 404) return undefined;
    return this.parse(path, { parse: containerFromInspect }, this.ok(path, answer));
  }

  async listNetworks(signal?: AbortSignal): Promise<NetworkInfo[]> {
    const path = this.versioned('/networks');
    return this.parse(path, networkListSchema, await this.getOk(path, signal)).map(networkInfo);
  }

  /**
   * One network by its full ID with its IPAM configuration and endpoints, or undefined when Docker has no network of
   * that ID (404, or an answer for another network: Docker also resolves names and ID prefixes).
   */
  async inspectNetwork(id: string, signal?: AbortSignal): Promise<NetworkDetail | undefined> {
    const path = this.versioned(`/networks/${encodeURIComponent(id)}`);
    const answer = await this.get(path, signal);
    if (answer.status === 404) return undefined;
    const n = this.parse(path, networkInspectSchema, this.ok(path, answer));
    return n.Id === id ? networkDetail(n) : undefined;
  }

  /** `GET /info`: the daemon's ID and network drivers. */
  async info(signal?: AbortSignal): Promise<DaemonInfo> {
    const path = this.versioned('/info');
    const i = this.parse(path, infoSchema, await this.getOk(path, signal));
    return { id: i.ID, networkDrivers: i.Plugins?.Network ?? [], ...(i.FirewallBackend ? { firewallBackend: i.FirewallBackend.Driver } : {}) };
  }

  /**
   * Opens `GET /events` with `filters` and `since` (seconds, as Docker prints them); resolves with the response
   * once its headers arrived (the body is the newline-delimited event stream, open until the daemon or `signal`
   * ends it).
   */
  openEvents(filters: Record<string, string[]>, since: string | undefined, signal: AbortSignal): Promise<http.IncomingMessage> {
    const q = new URLSearchParams({ filters: JSON.stringify(filters) });
    if (since !== undefined) q.set('since', since);
    const path = this.versioned(`/events?${q.toString()}`);
    return new Promise((resolve, reject) => {
      const req = this.send(path, signal, reject);
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          collect(res, MAX_BODY_BYTES)
            .then((body) => {
              reject(this.statusError(path, { status: res.statusCode ?? 0, body }));
            })
            .catch(reject);
          return;
        }
        // The stream may be idle for hours: the timeout covered only the wait for the headers.
        req.setTimeout(0);
        resolve(res);
      });
    });
  }

  private versioned(path: string): string {
    if (this.version === undefined) throw tsnetError('TSN_DOCKER', 'Docker API version not negotiated yet');
    return `/v${this.version}${path}`;
  }

  private send(path: string, signal: AbortSignal | undefined, reject: (err: unknown) => void): http.ClientRequest {
    const req = http.request({ socketPath: this.socketPath, path, method: 'GET', headers: { Host: 'docker' }, timeout: this.timeoutMs, signal });
    req.on('timeout', () => {
      req.destroy(tsnetError('TSN_DOCKER', `GET ${apiPath(path)}: no answer from Docker within ${this.timeoutMs} ms`));
    });
    req.on('error', (err) => {
      reject(err instanceof TsnetError ? err : tsnetError('TSN_DOCKER', `GET ${apiPath(path)} on ${this.socketPath} failed`, err));
    });
    req.end();
    return req;
  }

  private get(path: string, signal: AbortSignal | undefined): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const req = this.send(path, signal, reject);
      req.on('response', (res) => {
        collect(res, MAX_BODY_BYTES)
          .then((body) => {
            resolve({ status: res.statusCode ?? 0, body });
          })
          .catch((err: unknown) => {
            req.destroy();
            reject(tsnetError('TSN_DOCKER', `GET ${apiPath(path)}: reading the answer failed`, err));
          });
      });
    });
  }

  private async getOk(path: string, signal: AbortSignal | undefined): Promise<Buffer> {
    return this.ok(path, await this.get(path, signal));
  }

  private ok(path: string, answer: Answer): Buffer {
    if (answer.status !== 200) throw this.statusError(path, answer);
    return answer.body;
  }

  private statusError(path: string, answer: Answer): Error {
    let text = answer.body.toString('utf8', 0, Math.min(answer.body.length, 4096));
    try {
      text = errorBodySchema.parse(JSON.parse(text)).message;
    } catch {
      // not Docker's {"message"} shape: keep the raw (capped) text
    }
    return tsnetError('TSN_DOCKER', `GET ${apiPath(path)}: Docker answered ${answer.status}: ${text.slice(0, MAX_ERROR_TEXT)}`);
  }

  private parse<T>(path: string, schema: { parse(x: unknown): T }, body: Buffer): T {
    try {
      return schema.parse(JSON.parse(body.toString('utf8')));
    } catch (err) {
      throw tsnetError('TSN_DOCKER', `GET ${apiPath(path)}: unexpected answer from Docker`, err);
    }
  }
}

/** The path without its query (filters are long and not interesting in a message). */
function apiPath(path: string): string {
  return path.split('?')[0] ?? path;
}

function collect(res: http.IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        res.destroy(tsnetError('TSN_DOCKER', `answer larger than ${max} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    res.on('end', () => {
      resolve(Buffer.concat(chunks));
    });
    res.on('error', reject);
    res.on('aborted', () => {
      reject(tsnetError('TSN_DOCKER', 'answer cut off'));
    });
  });
}
