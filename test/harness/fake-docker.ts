/**
 * A fake Docker Engine API on a unix socket in a per-run temp dir, for the Docker room's unit tests: /version,
 * /containers/json, /containers/ID/json, /networks and a streaming /events, in the 1.41 shape (dockerd 20.10:
 * short ID in Aliases, no DNSNames) or the ≥ 1.44 shape (DNSNames; from 1.45 no short ID in Aliases). It refuses
 * versioned calls below its minimum as Engine 29 does, keeps only its last 1,000 events, can split event lines
 * across chunks, drop the stream, and be down.
 */
import fs from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface FakeEndpoint {
  networkId: string;
  ipv4?: string;
  ipv6?: string;
  /** `--network-alias` values. */
  aliases?: string[];
}

export interface FakeContainer {
  id: string;
  name: string;
  hostname: string;
  running: boolean;
  networks: Record<string, FakeEndpoint>;
}

export interface FakeNetwork {
  id: string;
  name: string;
  driver: string;
  internal: boolean;
  /** `IPAM.Driver`; without it the network has no `IPAM` in answers (the feed's tests predate it). */
  ipamDriver?: string;
  /** `IPAM.Config` as Docker's JSON spells it. */
  ipamConfig?: Array<{ Subnet: string; IPRange?: string; Gateway?: string; AuxiliaryAddresses?: Record<string, string> }>;
  /** `Containers` of an inspect, keyed as Docker keys them (container ID, or `ep-` + endpoint ID). */
  endpoints?: Record<string, { EndpointID: string; IPv4Address?: string; IPv6Address?: string }>;
}

export interface FakeDockerOptions {
  apiVersion: string;
  minApiVersion: string;
  /** Events are written in pieces of at most this many bytes (1 splits every line everywhere). */
  chunkBytes?: number;
}

const KEPT_EVENTS = 1000;

interface RawEvent {
  Type: string;
  Action: string;
  Actor: { ID: string; Attributes: Record<string, string> };
  time: number;
  timeNano: number;
}

function ver(v: string): number {
  const [a = 0, b = 0] = v.split('.').map(Number);
  return a * 1000 + b;
}

export class FakeDocker {
  readonly dir: string;
  readonly socketPath: string;
  readonly containers = new Map<string, FakeContainer>();
  readonly networks = new Map<string, FakeNetwork>();
  /** Every request's path (with query), in order. */
  readonly requests: string[] = [];
  /** Held before answering an inspect of that ID (for ordering tests). */
  readonly inspectGates = new Map<string, Promise<void>>();
  /** `GET /info`'s `ID`: tells one daemon from another. */
  daemonId = 'FAKE:DAEMON:ID';
  /** Paths (after the version) answered 500, for failure tests. */
  readonly failing = new Set<string>();
  private events: RawEvent[] = [];
  private clock = 1_700_000_000;
  private server: http.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  /** Open event streams with their filter. */
  private readonly streams = new Map<http.ServerResponse, (e: RawEvent) => boolean>();

  constructor(readonly opts: FakeDockerOptions) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-fake-docker-'));
    this.socketPath = path.join(this.dir, 'docker.sock');
  }

  async start(): Promise<void> {
    const server = http.createServer((req, res) => {
      this.handle(req, res);
    });
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath, resolve);
    });
    this.server = server;
  }

  /** Down: the socket is closed and removed, every connection cut. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    this.streams.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    fs.rmSync(this.socketPath, { force: true });
  }

  async destroy(): Promise<void> {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** Cuts every open event stream (the daemon stays up). */
  dropStreams(): void {
    for (const r of this.streams.keys()) r.socket?.destroy();
    this.streams.clear();
  }

  openStreams(): number {
    return this.streams.size;
  }

  /** Writes raw bytes to every open event stream (malformed lines). */
  writeRaw(text: string): void {
    for (const r of this.streams.keys()) r.write(text);
  }

  addNetwork(n: FakeNetwork): void {
    this.networks.set(n.id, n);
    this.event('network', 'create', n.id, { name: n.name, type: n.driver });
  }

  /** Creates and starts a container (events create, network connect per network, start). */
  run(c: Omit<FakeContainer, 'running'>): void {
    this.containers.set(c.id, { ...c, running: true });
    for (const ep of Object.values(c.networks)) this.event('network', 'connect', ep.networkId, { container: c.id });
    this.event('container', 'start', c.id, { name: c.name });
  }

  stopContainer(id: string): void {
    const c = this.must(id);
    c.running = false;
    this.event('container', 'die', id, { name: c.name });
  }

  startContainer(id: string): void {
    const c = this.must(id);
    c.running = true;
    this.event('container', 'start', id, { name: c.name });
  }

  rename(id: string, name: string): void {
    const c = this.must(id);
    c.name = name;
    this.event('container', 'rename', id, { name });
  }

  remove(id: string): void {
    this.containers.delete(id);
    this.event('container', 'destroy', id, {});
  }

  /** An event that changes nothing (e.g. to overflow the daemon's 1,000 kept events). */
  noise(count: number): void {
    for (let i = 0; i < count; i++) this.event('container', 'die', 'f'.repeat(64), {});
  }

  private must(id: string): FakeContainer {
    const c = this.containers.get(id);
    if (!c) throw new Error(`fake docker: no container ${id}`);
    return c;
  }

  private event(type: string, action: string, id: string, attrs: Record<string, string>): void {
    this.clock++;
    const e: RawEvent = { Type: type, Action: action, Actor: { ID: id, Attributes: attrs }, time: this.clock, timeNano: this.clock * 1e9 };
    this.events.push(e);
    if (this.events.length > KEPT_EVENTS) this.events.splice(0, this.events.length - KEPT_EVENTS);
    for (const [r, wanted] of this.streams) if (wanted(e)) this.writeEvent(r, e);
  }

  private writeEvent(res: http.ServerResponse, e: RawEvent): void {
    const line = Buffer.from(JSON.stringify(e) + '\n');
    const step = this.opts.chunkBytes ?? line.length;
    for (let i = 0; i < line.length; i += step) res.write(line.subarray(i, i + step));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://docker');
    this.requests.push(url.pathname + url.search);
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === '/version') {
      json(200, { Version: 'fake', ApiVersion: this.opts.apiVersion, MinAPIVersion: this.opts.minApiVersion });
      return;
    }
    const m = /^\/v(\d+\.\d+)(\/.*)$/.exec(url.pathname);
    if (!m) {
      json(404, { message: 'page not found' });
      return;
    }
    const [, v = '', rest = ''] = m;
    if (ver(v) < ver(this.opts.minApiVersion)) {
      json(400, { message: `client version ${v} is too old. Minimum supported API version is ${this.opts.minApiVersion}, please upgrade your client to a newer version` });
      return;
    }
    if (ver(v) > ver(this.opts.apiVersion)) {
      json(400, { message: `client version ${v} is too new. Maximum supported API version is ${this.opts.apiVersion}` });
      return;
    }
    if (this.failing.has(rest)) {
      json(500, { message: 'injected failure' });
      return;
    }
    if (rest === '/info') {
      const drivers = new Set(['bridge', 'host', 'macvlan', 'null', ...[...this.networks.values()].map((n) => n.driver)]);
      json(200, { ID: this.daemonId, Plugins: { Network: [...drivers].sort() } });
      return;
    }
    const network = /^\/networks\/([^/]+)$/.exec(rest);
    if (network) {
      const n = this.networks.get(network[1]);
      if (n) json(200, { ...this.networkBody(n), Containers: n.endpoints ?? {} });
      else json(404, { message: `network ${network[1]} not found` });
      return;
    }
    if (rest === '/containers/json') {
      json(
        200,
        [...this.containers.values()].filter((c) => c.running).map((c) => ({ Id: c.id, Names: [`/${c.name}`], State: 'running' })),
      );
      return;
    }
    const inspect = /^\/containers\/([^/]+)\/json$/.exec(rest);
    if (inspect) {
      const id = inspect[1];
      // The state is read when the request arrives and sent when the gate opens, like a slow daemon.
      const c = this.containers.get(id);
      const body = c ? this.inspectBody(c, v) : undefined;
      const send = (): void => {
        if (body) json(200, body);
        else json(404, { message: `No such container: ${id}` });
      };
      const gate = this.inspectGates.get(id);
      if (gate) gate.then(send, send);
      else send();
      return;
    }
    if (rest === '/networks') {
      json(
        200,
        [...this.networks.values()].map((n) => this.networkBody(n)),
      );
      return;
    }
    if (rest === '/events') {
      this.streamEvents(url, res);
      return;
    }
    json(404, { message: 'page not found' });
  }

  private networkBody(n: FakeNetwork): Record<string, unknown> {
    const body: Record<string, unknown> = { Id: n.id, Name: n.name, Driver: n.driver, Internal: n.internal, Scope: 'local' };
    if (n.ipamDriver !== undefined) body.IPAM = { Driver: n.ipamDriver, Options: null, Config: n.ipamConfig ?? [] };
    return body;
  }

  private streamEvents(url: URL, res: http.ServerResponse): void {
    const filters = JSON.parse(url.searchParams.get('filters') ?? '{}') as Partial<Record<string, string[]>>;
    const since = url.searchParams.get('since');
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.flushHeaders();
    const wanted = (e: RawEvent): boolean => (filters.type?.includes(e.Type) ?? true) && (filters.event?.includes(e.Action) ?? true);
    if (since !== null) for (const e of this.events) if (e.time >= Number(since) && wanted(e)) this.writeEvent(res, e);
    this.streams.set(res, wanted);
    res.on('close', () => this.streams.delete(res));
  }

  private inspectBody(c: FakeContainer, v: string): unknown {
    const shortId = c.id.slice(0, 12);
    const networks: Record<string, unknown> = {};
    for (const [name, ep] of Object.entries(c.networks)) {
      const aliases = ep.aliases ?? [];
      const e: Record<string, unknown> = {
        NetworkID: ep.networkId,
        IPAddress: c.running ? (ep.ipv4 ?? '') : '',
        GlobalIPv6Address: c.running ? (ep.ipv6 ?? '') : '',
        Aliases: ver(v) >= ver('1.45') ? aliases : [shortId, ...aliases],
      };
      if (ver(v) >= ver('1.44')) e.DNSNames = [c.name, ...aliases, shortId, c.hostname];
      networks[name] = e;
    }
    return { Id: c.id, Name: `/${c.name}`, Config: { Hostname: c.hostname }, State: { Running: c.running, Status: c.running ? 'running' : 'exited' }, NetworkSettings: { Networks: networks } };
  }
}
