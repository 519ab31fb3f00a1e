/**
 * The pure half of reclaiming what dockerd forgot: from what tsnet holds and what Docker's API showed in one complete
 * read, the candidates for removal, or why nothing may be decided. The scheduler (reclaimer.ts) looks twice, a grace
 * period apart, and removes only what both looks name identically (same record, same allocation token).
 */
import type { DaemonInfo, NetworkDetail } from '../docker/contract';
import type { Allocations } from '../ipam/driver';
import { addressOf, canonicalAddress, tryParseCidr } from '../netaddr';
import type { HostAddress } from '../store/records';

/** What tsnet holds, taken before Docker is read (so nothing in it is younger than the read). */
export interface Holdings {
  networks: Array<{
    id: string;
    createdAt: string;
    pending: boolean;
    /** Plain gateway and aux addresses of its subnets (dockerd's, from CreateNetwork). */
    addresses: string[];
    /** Addresses the driver reserved in tsnet's IPAM for itself (macvlan host shims). */
    reserved: HostAddress[];
    /** Canonical CIDRs of its subnets: a pool they come from is in use while the network lives (pending too). */
    subnets: string[];
  }>;
  endpoints: Array<{ id: string; networkId: string; createdAt: string; pending: boolean }>;
  pools: Allocations['pools'];
  addresses: Allocations['addresses'];
}

/** One complete read of Docker's API. */
export interface DockerView {
  daemon: DaemonInfo;
  /** Every network Docker has among those asked for (tsnet's by id, and those using tsnet's IPAM). */
  networks: NetworkDetail[];
}

export type Candidate =
  | { kind: 'endpoint'; networkId: string; endpointId: string; createdAt: string; why: string }
  | { kind: 'network'; networkId: string; createdAt: string; why: string }
  | { kind: 'address'; poolId: string; address: string; token: number; why: string }
  | { kind: 'pool'; poolId: string; token: number; why: string };

/** What makes Docker's API trusted to speak for the dockerd that uses tsnet. */
export type Evidence = 'network' | 'daemon' | 'driver' | 'first-use';

export type Decision =
  | { kind: 'decided'; candidates: Candidate[]; evidence?: Evidence }
  | { kind: 'in-doubt'; reason: string; candidates: number };

export interface DecideOptions {
  /** tsnet's driver (and IPAM) name (config.driverName: the socket's file name, or a managed plugin's reference). */
  driverName: string;
  /** The ID of the daemon trusted before (it knew tsnet's networks, or was read first by a tsnet holding nothing). */
  trustedDaemonId?: string;
  /** First-use trust promised at a start that held nothing: the first daemon read is trusted, whatever tsnet holds now. */
  firstUse?: boolean;
}

/**
 * Whether a driver name Docker shows is tsnet's. A managed plugin's name is its reference (`tsnet:latest`,
 * `registry:5000/tsnet:latest`), which dockerd keeps as the user typed it: with or without the default `:latest`.
 */
export function isDriverName(shown: string, driverName: string): boolean {
  const tagged = (n: string) => (n.slice(n.lastIndexOf('/') + 1).includes(':') ? n : `${n}:latest`);
  return tagged(shown) === tagged(driverName);
}

/** Identity of a candidate across looks: everything but the reason. */
export function candidateKey(c: Candidate): string {
  const { why: _why, ...identity } = c;
  return JSON.stringify(identity);
}

/** Removal order: endpoints before their networks, addresses before their pools. */
const ORDER: Record<Candidate['kind'], number> = { endpoint: 0, network: 1, address: 2, pool: 3 };

export function inRemovalOrder(cs: Candidate[]): Candidate[] {
  return [...cs].sort((a, b) => ORDER[a.kind] - ORDER[b.kind]);
}

const canonicalCidr = (text: string) => tryParseCidr(text)?.text ?? text;
const poolKey = (pool: string, subPool: string | undefined) => `${canonicalCidr(pool)}|${subPool === undefined ? '' : canonicalCidr(subPool)}`;

/**
 * Candidates: tsnet's networks Docker does not have; endpoints of networks it has that are not among the network's
 * endpoints; pools no network using tsnet's IPAM configures; addresses of the other pools that are no gateway, aux
 * address or endpoint address Docker shows, nor an address the driver reserved for a network it still has. Records
 * still pending are in flight and never candidates, nor is a gateway by itself (Docker does not always show it; it
 * goes with its pool), nor a pool a subnet of one of tsnet's networks comes from (it goes after the network).
 * Anything is removed only with evidence that this Docker is the one using tsnet: it knows one of tsnet's networks,
 * or it is the daemon trusted before, or (tsnet has no network of its own) it has networks using tsnet's driver or
 * IPAM. The first daemon read by a tsnet that holds nothing at all, with none trusted before, is trusted from then
 * on (`first-use`): a fresh install has nothing to lose, and a later crash may leave tsnet holding only what dockerd
 * never learnt of.
 */
export function decide(h: Holdings, view: DockerView, opts: DecideOptions): Decision {
  const docker = new Map(view.networks.map((n) => [n.id, n]));
  const live = h.networks.filter((n) => !n.pending);
  const liveIds = new Set(live.map((n) => n.id));
  const candidates: Candidate[] = [];
  for (const n of live) {
    if (!docker.has(n.id)) candidates.push({ kind: 'network', networkId: n.id, createdAt: n.createdAt, why: 'Docker has no network with this ID' });
  }
  for (const e of h.endpoints) {
    const net = docker.get(e.networkId);
    if (e.pending || !net || !liveIds.has(e.networkId)) continue;
    if (!net.endpoints.some((d) => d.endpointId === e.id)) {
      candidates.push({ kind: 'endpoint', networkId: e.networkId, endpointId: e.id, createdAt: e.createdAt, why: "not among the network's endpoints in Docker" });
    }
  }
  const ipamNets = view.networks.filter((n) => isDriverName(n.ipamDriver, opts.driverName));
  const configured = new Set(ipamNets.flatMap((n) => n.ipamConfig.map((c) => poolKey(c.subnet, c.ipRange))));
  const gone = new Set<string>();
  const ownSubnets = new Set(h.networks.flatMap((n) => n.subnets.map(canonicalCidr)));
  // A pool of a network in flight or itself a candidate: its addresses wait for the network's fate too.
  const settling = new Set(h.networks.filter((n) => n.pending || !docker.has(n.id)).flatMap((n) => n.subnets.map(canonicalCidr)));
  const deferred = new Set(h.pools.filter((p) => settling.has(canonicalCidr(p.pool))).map((p) => p.poolId));
  for (const p of h.pools) {
    if (configured.has(poolKey(p.pool, p.subPool)) || ownSubnets.has(canonicalCidr(p.pool))) continue;
    gone.add(p.poolId);
    const range = p.subPool === undefined ? '' : ` (ip-range ${p.subPool})`;
    candidates.push({ kind: 'pool', poolId: p.poolId, token: p.token, why: `no Docker network using tsnet's IPAM has subnet ${p.pool}${range}` });
  }
  const shown = new Set(
    [
      ...ipamNets.flatMap((n) => [
        ...n.ipamConfig.flatMap((c) => [...(c.gateway === undefined ? [] : [c.gateway]), ...Object.values(c.auxAddresses)]),
        ...n.endpoints.flatMap((e) => [...(e.ipv4 === undefined ? [] : [e.ipv4]), ...(e.ipv6 === undefined ? [] : [e.ipv6])]),
      ]),
      ...live.filter((n) => docker.has(n.id)).flatMap((n) => n.addresses),
    ].map((a) => canonicalAddress(addressOf(a))),
  );
  const reserved = new Set(live.flatMap((n) => n.reserved.map((r) => `${r.poolId}|${r.address}`)));
  for (const a of h.addresses) {
    if (a.kind === 'gateway' || gone.has(a.poolId) || deferred.has(a.poolId) || shown.has(a.address) || reserved.has(`${a.poolId}|${a.address}`)) continue;
    candidates.push({ kind: 'address', poolId: a.poolId, address: a.address, token: a.token, why: 'no gateway, aux or endpoint address Docker shows' });
  }
  const empty = h.networks.length + h.endpoints.length + h.pools.length + h.addresses.length === 0;
  const evidence = evidenceOf(live.length, live.some((n) => docker.has(n.id)), view, ipamNets.length > 0, opts, empty);
  if (candidates.length === 0) return { kind: 'decided', candidates, ...(evidence === undefined ? {} : { evidence }) };
  if (evidence === undefined) {
    const reason =
      live.length > 0
        ? `Docker (daemon ${view.daemon.id.slice(0, 40)}) knows none of tsnet's ${live.length} networks: it may be another dockerd than the one using tsnet (--docker-socket)`
        : `Docker (daemon ${view.daemon.id.slice(0, 40)}) has no network using driver or IPAM "${opts.driverName}": it may be another dockerd than the one using tsnet (--docker-socket)`;
    return { kind: 'in-doubt', reason, candidates: candidates.length };
  }
  return { kind: 'decided', candidates, evidence };
}

function evidenceOf(networks: number, knowsOne: boolean, view: DockerView, usesIpam: boolean, opts: DecideOptions, empty: boolean): Evidence | undefined {
  if (knowsOne) return 'network';
  if (opts.trustedDaemonId !== undefined && opts.trustedDaemonId === view.daemon.id) return 'daemon';
  if (opts.trustedDaemonId === undefined && (empty || opts.firstUse === true)) return 'first-use';
  if (networks === 0 && (usesIpam || view.daemon.networkDrivers.some((d) => isDriverName(d, opts.driverName)))) return 'driver';
  return undefined;
}
