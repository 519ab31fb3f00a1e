import type { DnsConfig } from '../config';
import type { ContainerInfo, DockerFeed } from '../docker/contract';
import { describeChain } from '../errors';
import { log } from '../log';
import { type Cidr, offsetOf, tryParseCidr, tryParseIp } from '../netaddr';
import { DnsCache } from './cache';
import type { DnsNetwork, Forwarder, ListenerSpec, QueryContext, QueryHandler } from './contract';
import { UpstreamForwarder } from './forwarder';
import { DnsListeners, desiredListeners, type OpenListener } from './listeners';
import { createResolver, type Resolver } from './resolver';
import { openListener } from './server';
import { UpstreamSource } from './upstreams';
import { RCODE } from './wire';
import { buildZone, type Zone } from './zone';

export interface DnsServiceOptions {
  config: DnsConfig;
  /** Containers from Docker (src/docker/); the service subscribes and starts it. */
  feed: DockerFeed;
  /** tsnet's networks now (from the driver's state, see dnsNetworks). */
  networks: () => DnsNetwork[];
  /** Seconds-resolution clock for the SOA serial. */
  now?: () => number;
  /** Binds a listener (default: UDP and TCP sockets, server.ts). */
  openListener?: (spec: ListenerSpec, handler: QueryHandler) => Promise<OpenListener>;
  /** Where other names go (default: the configured upstreams, with a cache). */
  forwarder?: Forwarder;
}

const logger = log.child({ component: 'dns' });
const LINK_LOCAL = ['169.254.0.0/16', 'fe80::/10'].flatMap((s) => tryParseCidr(s) ?? []);

/**
 * Before Docker was read once, a name tsnet would deny (NXDOMAIN) may well exist: SERVFAIL instead, which clients
 * neither cache for long nor take as an answer.
 */
function unsynced(zone: Zone): Zone {
  return {
    zone: zone.zone,
    lookup(q, ctx) {
      const a = zone.lookup(q, ctx);
      return a.kind === 'local' && a.rcode === RCODE.NXDOMAIN ? { kind: 'local', rcode: RCODE.SERVFAIL, answers: [], authority: [], rotate: false } : a;
    },
  };
}

/**
 * tsnet's DNS server: the zone is rebuilt from Docker's containers and tsnet's networks whenever either changes,
 * listeners follow the networks, and names that are not tsnet's go to the upstreams. It runs beside the plugin
 * API and never on a plugin call's path: the driver only tells it that networks changed, synchronously, and Docker
 * is read on the feed's own schedule.
 */
export class DnsService {
  private containers: ReadonlyArray<ContainerInfo> = [];
  private nets: DnsNetwork[] = [];
  /** Subnets of internal networks: a query from them is never forwarded, whatever listener it reached. */
  private internalSubnets: Cidr[] = [];
  /**
   * Subnets of the networks with a gateway on the host (bridges): the sources a gateway listener serves. A macvlan or
   * ipvlan subnet is the LAN's, shared with machines that are not containers: they use host addresses.
   */
  private subnets: Cidr[] = [];
  private serial = 0;
  /** Until Docker was read once, tsnet's zone is unknown rather than empty (see unsynced). */
  private synced = false;
  private readonly resolver: Resolver;
  private readonly forwarder: Forwarder | undefined;
  private readonly upstreams: UpstreamSource;
  private readonly listeners: DnsListeners;
  private readonly now: () => number;

  constructor(private readonly opts: DnsServiceOptions) {
    const { config } = opts;
    this.now = opts.now ?? (() => Math.floor(Date.now() / 1000));
    const forwarding = config.upstreams === 'resolv.conf' || config.upstreams.length > 0;
    this.upstreams = new UpstreamSource(config, { isOwnListener: (a, p) => this.listeners.isOwn(a, p) });
    this.forwarder = opts.forwarder ?? (forwarding ? new UpstreamForwarder({ upstreams: this.upstreams, cache: new DnsCache() }) : undefined);
    this.resolver = createResolver({ forwarder: this.forwarder });
    const handler: QueryHandler = (msg, ctx) => {
      const allowed = this.classify(ctx);
      return allowed ? this.resolver.handle(msg, allowed) : null;
    };
    const open = opts.openListener ?? openListener;
    this.listeners = new DnsListeners((spec) => open(spec, handler));
    opts.feed.onContainers((containers) => {
      this.containers = containers;
      this.synced = true;
      this.rebuild();
    });
  }

  /** Reads the upstreams, opens the listeners of the networks there are now and starts following Docker. */
  async start(): Promise<void> {
    // Before any listener: the first forwarded queries would otherwise get SERVFAIL.
    await this.upstreams.refresh();
    this.networksChanged();
    this.opts.feed.start();
  }

  /** Re-reads tsnet's networks: zone and listeners follow. Never throws, never waits. */
  networksChanged(): void {
    this.nets = this.opts.networks();
    const parsed = (nets: DnsNetwork[]) => nets.flatMap((n) => n.subnets.flatMap((s) => tryParseCidr(s) ?? []));
    this.subnets = parsed(this.nets.filter((n) => n.hostAddresses.length > 0));
    this.internalSubnets = parsed(this.nets.filter((n) => n.internal));
    this.rebuild();
    const specs = desiredListeners(this.opts.config, this.nets);
    this.listeners.update(specs).catch((err: unknown) => logger.error('DNS listeners not updated', { error: describeChain(err) }));
  }

  /** SIGHUP: resolv.conf is compared now instead of at the next query's check (explicit upstreams never change). */
  reload(): Promise<void> {
    return this.upstreams.refresh();
  }

  async stop(): Promise<void> {
    await this.opts.feed.stop();
    await this.listeners.close();
    await this.forwarder?.close();
  }

  /**
   * What a query may get, from where it came: undefined drops it. A gateway listener serves bridge containers and
   * the host (whose queries to a gateway come from the gateway address): the host answers packets for its gateway
   * addresses from any interface, and a LAN client reaching one is not what `--dns-listen gateways` offers (no
   * names and no open resolver for the LAN; that is `--dns-listen ADDRESS`).
   */
  private classify(ctx: QueryContext): QueryContext | undefined {
    if (ctx.networkId === undefined && (!ctx.mayForward || this.internalSubnets.length === 0)) return ctx;
    const ip = tryParseIp(ctx.source);
    if (ip === undefined) return undefined;
    const within = (subnets: Cidr[]) => subnets.some((c) => offsetOf(c, ip) !== undefined);
    if (ctx.networkId !== undefined && !within(this.subnets)) return undefined;
    // A link-local source is in no subnet, yet an internal container has one (fe80::) that passes the firewall's
    // reverse-path check: with internal networks around it may be one of theirs.
    const internal = within(this.internalSubnets) || (this.internalSubnets.length > 0 && within(LINK_LOCAL));
    return ctx.mayForward && internal ? { ...ctx, mayForward: false } : ctx;
  }

  private rebuild(): void {
    // The serial only grows, also for two changes within one second.
    this.serial = Math.max(this.serial + 1, this.now());
    const { zone, ttl } = this.opts.config;
    const built = buildZone({ zone, ttl, networks: this.nets, containers: this.containers, serial: this.serial });
    this.resolver.setZone(this.synced ? built : unsynced(built));
  }
}
