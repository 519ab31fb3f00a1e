/**
 * Reclaiming what dockerd forgot, as one component for daemon.ts: it follows Docker's API status through the feed
 * and runs a {@link Reclaimer} pass whenever the API becomes readable (the first time after start, and after every
 * outage), reading Docker with its own client, and removes confirmed candidates through the driver's and the IPAM's
 * normal delete paths (ports, DNAT elements, held host ports, links, addresses).
 */
import { DockerClient } from '../docker/client';
import type { DockerFeed } from '../docker/contract';
import type { Timers } from '../docker/feed';
import type { TsnetDriver } from '../driver/driver';
import { modeOf } from '../driver/modes';
import { assertNever } from '../errors';
import type { TsnetIpam } from '../ipam/driver';
import { withLogContext } from '../log';
import { addressOf } from '../netaddr';
import { put, type Store } from '../store/contract';
import type { Candidate, Holdings } from './decide';
import { readDocker } from './read';
import { Reclaimer } from './reclaimer';

export interface ReclaimOptions {
  /** The driver and IPAM name Docker knows tsnet by (config.driverName). */
  driverName: string;
  dockerSocket: string;
  graceMs: number;
  /** Tells when Docker's API is readable; started by {@link Reclaim.start} if nobody did. */
  feed: DockerFeed;
  driver: Pick<TsnetDriver, 'state' | 'deleteEndpoint' | 'deleteNetwork'>;
  ipam: Pick<TsnetIpam, 'allocations' | 'forgetPool' | 'forgetAddress'>;
  /** Where the trusted daemon is kept across restarts (the `trust` collection). */
  store: Store;
  /** Per Docker request (see DockerClientOptions.timeoutMs). */
  timeoutMs?: number;
  timers?: Pick<Timers, 'setTimeout' | 'clearTimeout'>;
}

export class Reclaim {
  private readonly reclaimer: Reclaimer;

  /** A Reclaim trusting the daemon a previous start trusted (read from the store first). */
  static async load(opts: ReclaimOptions): Promise<Reclaim> {
    const trust = await opts.store.all('trust');
    const daemonId = trust.length > 0 ? trust[0].daemonId : undefined;
    // An empty id is first-use trust promised at start (./trust.ts): the first daemon read is trusted.
    return new Reclaim(opts, daemonId === '' ? undefined : daemonId, daemonId === '');
  }

  private constructor(
    private readonly opts: ReclaimOptions,
    trustedDaemonId: string | undefined,
    firstUse: boolean,
  ) {
    const { driverName } = opts;
    const client = new DockerClient({ socketPath: opts.dockerSocket, ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }) });
    this.reclaimer = new Reclaimer({
      driverName,
      graceMs: opts.graceMs,
      holdings: () => this.holdings(),
      read: (ids) => readDocker(client, ids, driverName),
      remove: (c) => this.remove(c),
      ...(trustedDaemonId === undefined ? {} : { trustedDaemonId }),
      firstUse,
      remember: (daemonId, evidence) => opts.store.commit([put('trust', 'docker', { daemonId, evidence, since: new Date().toISOString() })]),
      ...(opts.timers ? { timers: opts.timers } : {}),
    });
    opts.feed.onStatus((s) => {
      if (s.up) this.reclaimer.trigger();
      else this.reclaimer.apiDown();
    });
    // A change to Docker's networks can make what tsnet holds decidable: a create cut off by a crash and retried
    // under a new id makes Docker know a tsnet network (the daemon trusted), a pool or network left by the cut-off
    // one is then forgotten. Without this, that waited for tsnet's next start.
    opts.feed.onNetworks(() => this.reclaimer.trigger());
  }

  start(): void {
    this.opts.feed.start();
  }

  /** Stops after the removal in progress; the feed is its starter's to stop. */
  stop(): Promise<void> {
    return this.reclaimer.stop();
  }

  /** Resolves when no pass runs (tests). */
  idle(): Promise<void> {
    return this.reclaimer.idle();
  }

  private holdings(): Holdings {
    const { networks, endpoints } = this.opts.driver.state();
    const { pools, addresses } = this.opts.ipam.allocations();
    return {
      networks: networks.map((n) => ({
        id: n.id,
        createdAt: n.createdAt,
        pending: n.pending === true,
        addresses: [...n.ipv4, ...n.ipv6].flatMap((s) => [...(s.gateway === undefined ? [] : [addressOf(s.gateway)]), ...Object.values(s.auxAddresses)]),
        reserved: modeOf(n).reservedAddresses(),
        subnets: [...n.ipv4, ...n.ipv6].map((sub) => sub.pool),
      })),
      endpoints: endpoints.map((e) => ({ id: e.id, networkId: e.networkId, createdAt: e.createdAt, pending: e.pending === true })),
      pools,
      addresses,
    };
  }

  private async remove(c: Candidate): Promise<boolean> {
    const { driver, ipam } = this.opts;
    switch (c.kind) {
      case 'endpoint': {
        const same = driver.state().endpoints.some((e) => e.id === c.endpointId && e.networkId === c.networkId && e.createdAt === c.createdAt);
        if (same) await withLogContext({ networkId: c.networkId, endpointId: c.endpointId }, () => driver.deleteEndpoint(c.networkId, c.endpointId));
        return same;
      }
      case 'network': {
        const same = driver.state().networks.some((n) => n.id === c.networkId && n.createdAt === c.createdAt);
        if (same) await withLogContext({ networkId: c.networkId }, () => driver.deleteNetwork(c.networkId));
        return same;
      }
      case 'address':
        return ipam.forgetAddress(c.poolId, c.address, c.token);
      case 'pool':
        return ipam.forgetPool(c.poolId, c.token);
      default:
        return assertNever(c, 'reclaim candidate');
    }
  }
}
