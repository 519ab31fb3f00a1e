import { describeChain, tsnetError } from '../errors';
import type { FwNetwork, Kernel, LinkInfo } from '../kernel/contract';
import { log, withLogContext } from '../log';
import { del, put, type Store, type StoreOp } from '../store/contract';
import { elapsed, emit } from '../telemetry/hook';
import type { Collections, EndpointRecord, HostAddress, NetworkRecord, ParentRecord } from '../store/records';
import type {
  Capabilities,
  CreateEndpointRequest,
  CreateNetworkRequest,
  EndpointInterface,
  ExternalConnectivityRequest,
  HostAddressPool,
  JoinRequest,
  JoinResponse,
  NetworkDriver,
} from './contract';
import { type BoundNetwork, type HostView, interfaceReply } from './mode';
import { modeOf, planNetwork } from './modes';
import { KeyedMutex, Mutex } from '../mutex';
import { runSteps, type Step } from './steps';
import { PortAllocator } from './port-allocator';
import { LinkReaper } from './reaper';
import { applyRemovals, tearDown } from './teardown';
import { claimParent, releaseParent } from './parent';
import { ForwardingOwner } from './forwarding';
import { readOnce } from './host-view';
import { differingFields, requestDigest } from './request-digest';
import { applyPlan, type ApplyTarget } from './reconcile-apply';
import { driftByKind, firewallWant, noIccPortsOf, planFirewall, planReconcile, sysctlsToRead } from './reconcile-plan';

/** Teardown after its commit is best effort: what fails is logged (see deleteNetwork for what cleans it up). */
function logLeftover(err: unknown): void {
  log.error('network teardown incomplete after its removal was committed', { error: describeChain(err) });
}

/** Without tsnet's IPAM wired in, no pool is tsnet's. */
const NO_HOST_ADDRESSES: HostAddressPool = { reserve: async () => undefined, release: async () => undefined };

/** Each name once (a link may be both a Leave link and an endpoint link). */
const unique = (links: string[]) => [...new Set(links)];

/**
 * A create for an id tsnet has: dockerd repeating a call it got no answer to (the identical request) is answered as
 * before; any other request is refused, naming the fields that differ.
 */
function checkRepeat(rec: { id: string; requestDigest?: string }, digest: string, code: 'TSN_NETWORK_EXISTS' | 'TSN_ENDPOINT_EXISTS', what: string): void {
  if (rec.requestDigest === digest) return;
  const why = rec.requestDigest === undefined ? 'made before tsnet kept requests' : `made by a request whose ${differingFields(rec.requestDigest, digest).join(', ')} differ`;
  throw tsnetError(code, `${what} "${rec.id}" already exists (${why})`);
}

/**
 * The network driver: keeps networks and endpoints in memory, persists every change in the store, and drives the
 * mode's kernel steps. Ordering rule for crash safety: a record is committed before the kernel objects it
 * describes are made, and removed only after they are gone, so after a crash the store is never missing
 * something that exists in the kernel (reconcile() re-creates or removes the rest). A created record is committed
 * pending first and done once its kernel work is, before dockerd gets the answer: one still pending at start was
 * never answered as a success, and undoPending() removes it.
 *
 * Locking, always taken in this order (so no cycle can form):
 * 1. `topology`, driver-wide: CreateNetwork and DeleteNetwork, i.e. everything that decides state shared between
 *    networks (the set of claimed link names such as bridges, later shared parents and VLAN links; whether the
 *    firewall base is needed). Checks on that state run inside it.
 * 2. `locks`, per network id: every call on one network, so a network's kernel steps never interleave.
 * Background jobs that act on shared state (removing the firewall base) run in the reaper's lane and re-check the
 * state when they run; they take no lock. They are scheduled only under `topology`, and CreateNetwork flushes the
 * reaper under `topology` before it builds, so such a job never runs while a network is being built.
 */
export class TsnetDriver implements NetworkDriver {
  private readonly networks = new Map<string, NetworkRecord>();
  private readonly endpoints = new Map<string, EndpointRecord>();
  /** Shared parent links of child-link networks, by link name (changed only under `topology`). */
  private readonly parents = new Map<string, ParentRecord>();
  private readonly topology = new Mutex();
  private readonly locks = new KeyedMutex();
  private readonly reaper: LinkReaper;
  private readonly ports = new PortAllocator();
  private readonly networkListeners: Array<() => void> = [];

  private constructor(
    private readonly store: Store,
    readonly kernel: Kernel,
    private readonly forwarding: ForwardingOwner,
    private readonly hostAddresses: HostAddressPool,
  ) {
    this.reaper = new LinkReaper(kernel.background, store);
  }

  static async load(store: Store, kernel: Kernel, hostAddresses: HostAddressPool = NO_HOST_ADDRESSES): Promise<TsnetDriver> {
    const d = new TsnetDriver(store, kernel, await ForwardingOwner.load(store, kernel), hostAddresses);
    for (const n of await store.all('network')) d.networks.set(n.id, n);
    for (const e of await store.all('endpoint')) d.endpoints.set(e.id, e);
    for (const p of await store.all('parent')) d.parents.set(p.link, p);
    return d;
  }

  private modeOf(net: NetworkRecord): BoundNetwork {
    return modeOf(net);
  }

  /**
   * `listener` runs after each network created or deleted (not after a failed create), once its kernel work is
   * done: the DNS room's listeners follow networks through it. It must not throw or call the driver back.
   */
  onNetworksChanged(listener: () => void): void {
    this.networkListeners.push(listener);
  }

  private networksChanged(): void {
    for (const l of this.networkListeners) {
      try {
        l();
      } catch (err) {
        log.error('network change listener failed', { error: describeChain(err) });
      }
    }
  }

  /** Snapshot of the state, for reconciliation and inspection. */
  state(): { networks: NetworkRecord[]; endpoints: EndpointRecord[]; parents: ParentRecord[] } {
    return { networks: [...this.networks.values()], endpoints: [...this.endpoints.values()], parents: [...this.parents.values()] };
  }

  /**
   * One answer for every mode (capabilities are per driver). Scope local: state lives on this host, and a network
   * created without --scope stays local (dockerd takes the default scope from here), bridges included.
   * ConnectivityScope global, as Docker's macvlan and ipvlan: a --config-only network per host plus a
   * `--scope swarm --config-from` network lets swarm services attach to macvlan or VLAN networks.
   */
  capabilities(): Capabilities {
    return { scope: 'local', connectivityScope: 'global' };
  }

  createNetwork(req: CreateNetworkRequest): Promise<void> {
    return this.networkWide(req.networkId, async () => {
      const digest = requestDigest(req);
      const existing = this.networks.get(req.networkId);
      // Still pending: its create failed and so did undoing it; it goes before this create (as at the next start).
      if (existing?.pending) await this.removeNetwork(existing);
      else if (existing) {
        checkRepeat(existing, digest, 'TSN_NETWORK_EXISTS', 'NetworkID');
        log.info('network create repeated with the identical request: already made');
        return;
      }
      // Links of deleted networks may still be on their way out (same bridge name), and a queued firewall base
      // removal must run before this network's elements go in.
      await this.reaper.flush();
      const others = [...this.networks.values()];
      const host: HostView = {
        ...readOnce(this.kernel),
        claimed: new Set([...others.flatMap((n) => this.modeOf(n).networkLinks()), ...this.parents.keys()]),
        networks: others,
        parents: this.parents,
        hostAddresses: this.hostAddresses,
      };
      const net: NetworkRecord = { ...(await planNetwork(req, host)), requestDigest: digest };
      const mode = this.modeOf(net);
      try {
        await this.buildNetwork(net, mode, host);
      } catch (err) {
        await this.releaseAddresses(mode.reservedAddresses());
        throw err;
      }
      await this.commitDone('network', this.networks, net, () => this.removeNetwork(net));
      log.info('network created', { mode: net.mode, links: mode.networkLinks(), parent: mode.parent()?.link, subnets: [...net.ipv4, ...net.ipv6].map((s) => s.pool) });
      this.networksChanged();
    });
  }

  /**
   * The network record and its parent's (when it has one) go in one commit, before the kernel steps; the parent's
   * steps (making an owned link) come first. A failure takes both records back.
   */
  private async buildNetwork(net: NetworkRecord, mode: BoundNetwork, host: HostView): Promise<void> {
    const choice = mode.parent();
    const steps = mode.setupSteps(this.kernel);
    await this.forwarding.claim(steps);
    if (!choice) {
      await this.recordThenBuild('network', this.networks, net, steps);
      return;
    }
    const before = this.parents.get(choice.link);
    const claim = claimParent(before, choice, await host.link(choice.link), net.id, this.kernel.owner);
    const restore = before ? put('parent', before.link, before) : del('parent', choice.link);
    this.parents.set(claim.record.link, claim.record);
    try {
      // A tombstone left by a failed deletion of the link must not delete it under its new network at the next start.
      await this.recordThenBuild('network', this.networks, net, [...claim.steps, ...steps], {
        ops: [put('parent', claim.record.link, claim.record), del('tombstone', claim.record.link)],
        undo: [restore],
      });
    } catch (err) {
      if (before) this.parents.set(before.link, before);
      else this.parents.delete(choice.link);
      throw err;
    }
  }

  /** Addresses are the IPAM's to free: a failure is logged (the pool frees them when it goes). */
  private async releaseAddresses(addresses: HostAddress[]): Promise<void> {
    for (const a of addresses) {
      await this.hostAddresses.release(a.poolId, a.address).catch((err: unknown) => log.error('host address not released', { address: a.address, error: describeChain(err) }));
    }
  }

  deleteNetwork(networkId: string): Promise<void> {
    return this.networkWide(networkId, async () => {
      const net = this.networks.get(networkId);
      if (net) await this.removeNetwork(net);
    });
  }

  /** DeleteNetwork's work (under networkWide), also undoing a network whose create did not finish. */
  private async removeNetwork(net: NetworkRecord): Promise<void> {
    const networkId = net.id;
    const mode = this.modeOf(net);
    // dockerd refuses to remove a network with endpoints; any left here are stale (e.g. from before a crash).
    const stale = [...this.endpoints.values()].filter((e) => e.networkId === networkId);
    const choice = mode.parent();
    const parent = choice ? releaseParent(this.parents.get(choice.link), networkId) : { ops: [], links: [] };
    // The parent goes last: its children die with it, and a shared one outlives this network.
    const links = unique([...stale.flatMap((e) => [...mode.leaveLinks(e), ...mode.endpointLinks(e)]), ...mode.ownedLinks(), ...parent.links]);
    // The removal is committed first: dockerd forgets the network whatever this call answers, so no failure below
    // may leave a live record behind. What a failure leaves belongs to no record: the links are tombstoned and the
    // next start's firewall sync drops stale elements; addresses left on an adopted bridge are logged.
    await this.store.commit([del('network', networkId), ...stale.map((e) => del('endpoint', e.id)), ...parent.ops, ...LinkReaper.tombstones(links)]);
    this.networks.delete(networkId);
    if (choice) {
      if (parent.next) this.parents.set(choice.link, parent.next);
      else this.parents.delete(choice.link);
    }
    for (const e of stale) this.endpoints.delete(e.id);
    const noIcc = stale.flatMap((e) => this.noIccPorts(net, e));
    if (noIcc.length > 0) await tearDown('releasing icc=false ports of stale endpoints', () => this.kernel.firewall.removeNoIccPorts(noIcc)).catch(logLeftover);
    const ports = stale.flatMap((e) => e.ports ?? []);
    if (ports.length > 0) await tearDown('unpublishing ports of stale endpoints', () => this.kernel.firewall.removePorts(ports)).catch(logLeftover);
    for (const e of stale) this.ports.release(e.id);
    await tearDown('releasing the network', () => mode.releaseNetwork(this.kernel)).catch(logLeftover);
    await this.releaseAddresses(mode.reservedAddresses());
    this.reaper.schedule(links);
    // Only a network with a firewall part can leave the table unneeded (the job costs five failing nft/iptables runs).
    if (mode.firewallView() !== undefined && !this.needsFirewall()) this.reaper.scheduleJob('remove firewall base', () => this.removeFirewallBaseIfUnused());
    log.info('network deleted', { staleEndpoints: stale.length });
    this.networksChanged();
  }

  createEndpoint(req: CreateEndpointRequest): Promise<EndpointInterface> {
    return this.locks.run(req.networkId, async () => {
      const net = this.requireNetwork(req.networkId);
      const digest = requestDigest(req);
      const existing = this.endpoints.get(req.endpointId);
      // As in createNetwork. One pending on another network is not this lock's: refused below like any other.
      if (existing?.pending && existing.networkId === net.id) await this.removeEndpoint(existing);
      else if (existing) {
        checkRepeat(existing, digest, 'TSN_ENDPOINT_EXISTS', 'EndpointID');
        log.info('endpoint create repeated with the identical request: already made');
        return interfaceReply(existing, req.iface);
      }
      const mode = this.modeOf(net);
      const ep: EndpointRecord = { ...mode.planEndpoint(req, [...this.endpoints.values()].filter((e) => e.networkId === net.id)), requestDigest: digest };
      await this.recordThenBuild('endpoint', this.endpoints, ep, this.endpointSteps(net, ep));
      await this.commitDone('endpoint', this.endpoints, ep, () => this.removeEndpoint(ep));
      log.info('endpoint created', { links: mode.endpointLinks(ep), address: ep.address, addressIPv6: ep.addressIPv6, mac: ep.mac });
      return interfaceReply(ep, req.iface);
    });
  }

  deleteEndpoint(networkId: string, endpointId: string): Promise<void> {
    return this.locks.run(networkId, async () => {
      const found = this.endpointOf(networkId, endpointId);
      if (found) await this.removeEndpoint(found);
    });
  }

  /** DeleteEndpoint's work (under the network's lock), also undoing an endpoint whose create did not finish. */
  private async removeEndpoint(found: EndpointRecord): Promise<void> {
    const { networkId, id: endpointId } = found;
    // dockerd revokes first; after a crash of dockerd it may not have.
    if (found.ports) await this.unpublish(found);
    const ep = this.endpoints.get(endpointId) ?? found;
    const net = this.networks.get(networkId);
    const mode = net ? this.modeOf(net) : undefined;
    const links = mode ? unique([...mode.leaveLinks(ep), ...mode.endpointLinks(ep)]) : [];
    if (net) await this.kernel.firewall.removeNoIccPorts(this.noIccPorts(net, ep));
    const removals = mode?.endpointRemovalChanges(ep) ?? [];
    if (removals.length > 0) await tearDown('removing endpoint routes', () => applyRemovals(this.kernel, removals));
    await this.store.commit([del('endpoint', endpointId), ...LinkReaper.tombstones(links)]);
    this.endpoints.delete(endpointId);
    this.reaper.schedule(links);
    log.info('endpoint deleted');
  }

  /** Runs network-level work: under the driver-wide lock, then the network's own (the lock order above). */
  private networkWide<T>(networkId: string, fn: () => Promise<T>): Promise<T> {
    return this.topology.run(() => this.locks.run(networkId, fn));
  }

  /** The firewall views of the networks whose mode has a firewall part. */
  private firewallViews(): FwNetwork[] {
    return [...this.networks.values()].flatMap((n) => this.modeOf(n).firewallView() ?? []);
  }

  /** tsnet's table must exist: a network has a firewall part, or a forward guard holds (see forwarding.ts). */
  private needsFirewall(): boolean {
    return this.forwarding.guarded || this.firewallViews().length > 0;
  }

  /** The queued job re-checks: a network created since it was queued needs the base. */
  private async removeFirewallBaseIfUnused(): Promise<void> {
    if (this.needsFirewall()) return;
    await this.kernel.firewall.removeBase();
  }

  /** Waits for background deletions (tests). */
  drain(): Promise<void> {
    return this.reaper.flush();
  }

  /** Shutdown: stops background deletion after the chunk in progress; tombstones keep the rest for the next start. */
  async stop(): Promise<void> {
    await this.reaper.stop();
    this.ports.closeAll();
  }

  async endpointOperInfo(networkId: string, endpointId: string): Promise<Record<string, unknown>> {
    const ep = this.endpointOf(networkId, endpointId);
    const net = this.networks.get(networkId);
    if (!ep || !net) return {};
    return {
      ...this.modeOf(net).operInfo(ep),
      ...(ep.sandboxKey ? { sandboxKey: ep.sandboxKey } : {}),
      ...(ep.ports ? { publishedPorts: ep.ports } : {}),
    };
  }

  join(req: JoinRequest): Promise<JoinResponse> {
    return this.locks.run(req.networkId, async () => {
      const net = this.requireNetwork(req.networkId);
      const ep = this.requireEndpoint(net, req.endpointId);
      const mode = this.modeOf(net);
      const response = mode.joinResponse(ep);
      const changes = mode.joinChanges(ep);
      // libnetwork joins an endpoint once; a second Join would make a second link under the name of the first.
      if (changes.length > 0 && ep.sandboxKey !== undefined) {
        throw tsnetError('TSN_ENDPOINT_JOINED', `EndpointID "${ep.id}" is already joined; a ${net.mode} endpoint's link is made once per Join (Leave first)`);
      }
      // The record says joined before the link exists: a crash in between leaves a record whose link the next
      // start does not sweep and dockerd's Leave deletes.
      const joined = { ...ep, sandboxKey: req.sandboxKey };
      await this.saveEndpoint(joined);
      if (changes.length === 0) return response;
      // A Leave of this endpoint may still have its link queued for deletion under the same name; other networks'
      // deletions need not hold this Join up.
      await this.reaper.settle(mode.endpointLinks(ep));
      try {
        await runSteps(this.kernel, `join ${ep.id.slice(0, 12)}`, [{ name: 'endpoint link', changes }]);
      } catch (err) {
        await this.saveEndpoint(ep);
        throw err;
      }
      return response;
    });
  }

  leave(networkId: string, endpointId: string): Promise<void> {
    return this.locks.run(networkId, async () => {
      const ep = this.endpointOf(networkId, endpointId);
      if (!ep?.sandboxKey) return;
      const net = this.networks.get(networkId);
      const links = net ? this.modeOf(net).leaveLinks(ep) : [];
      const { sandboxKey: _left, ...rest } = ep;
      await this.store.commit([put('endpoint', ep.id, rest), ...LinkReaper.tombstones(links)]);
      this.endpoints.set(ep.id, rest);
      this.reaper.schedule(links);
    });
  }

  programExternalConnectivity(req: ExternalConnectivityRequest): Promise<void> {
    return this.locks.run(req.networkId, async () => {
      const net = this.requireNetwork(req.networkId);
      const ep = this.requireEndpoint(net, req.endpointId);
      const mode = this.modeOf(net);
      // Docker publishes nothing on internal networks: nothing may enter them from outside.
      const wants = net.internal ? [] : (mode.portWants(ep, req.portBindings) ?? []);
      if (ep.ports) await this.unpublish(ep);
      if (wants.length === 0) return;
      const current = this.endpoints.get(ep.id) ?? ep;
      const ports = await this.ports.reserve(ep.id, wants);
      try {
        await this.saveEndpoint({ ...current, ports });
      } catch (err) {
        this.ports.release(ep.id);
        throw err;
      }
      try {
        await this.kernel.firewall.addPorts(ports);
      } catch (err) {
        await this.saveEndpoint(current);
        this.ports.release(ep.id);
        throw tsnetError('TSN_KERNEL', 'publishing ports failed', err);
      }
      log.info('ports published', { ports: ports.map((p) => `${p.hostIp ?? '*'}:${p.hostPort}/${p.proto}->${p.containerIp}:${p.containerPort}`) });
    });
  }

  revokeExternalConnectivity(networkId: string, endpointId: string): Promise<void> {
    return this.locks.run(networkId, async () => {
      const ep = this.endpointOf(networkId, endpointId);
      if (ep?.ports) await this.unpublish(ep);
    });
  }

  /** Firewall first, then the record, then the host ports: a crash in between leaves the store as the superset. */
  private async unpublish(ep: EndpointRecord): Promise<void> {
    await tearDown('unpublishing ports', () => this.kernel.firewall.removePorts(ep.ports ?? []));
    const { ports: _gone, ...rest } = ep;
    await this.saveEndpoint(rest);
    this.ports.release(ep.id);
    log.info('ports unpublished');
  }

  private endpointSteps(net: NetworkRecord, ep: EndpointRecord): Step[] {
    const steps: Step[] = [{ name: 'endpoint links', changes: this.modeOf(net).endpointSetupChanges(ep) }];
    // enable_icc=false must hold without br_netfilter too: the firewall drops frames between such ports.
    const ports = this.noIccPorts(net, ep);
    const fw = this.kernel.firewall;
    if (ports.length > 0) steps.push({ name: 'firewall: icc=false port', run: () => fw.addNoIccPorts(ports), undo: () => fw.removeNoIccPorts(ports) });
    return steps;
  }

  /** The endpoint's bridge ports the firewall keeps apart (none on icc=true networks). */
  private noIccPorts(net: NetworkRecord, ep: EndpointRecord): string[] {
    return noIccPortsOf(this.modeOf(net), ep);
  }

  private requireEndpoint(net: NetworkRecord, endpointId: string): EndpointRecord {
    const ep = this.endpointOf(net.id, endpointId);
    if (!ep) throw tsnetError('TSN_UNKNOWN_ENDPOINT', `EndpointID "${endpointId}" does not exist on NetworkID "${net.id}"`);
    return ep;
  }

  /**
   * The endpoint if it is on `networkId`; undefined if tsnet has no such endpoint (deletes and Leave replayed at boot
   * succeed on that). One of another network is refused: acting on it would change a network dockerd did not name.
   */
  private endpointOf(networkId: string, endpointId: string): EndpointRecord | undefined {
    const ep = this.endpoints.get(endpointId);
    if (ep && ep.networkId !== networkId) {
      throw tsnetError('TSN_UNKNOWN_ENDPOINT', `EndpointID "${endpointId}" does not exist on NetworkID "${networkId}" (it belongs to another network)`);
    }
    return ep;
  }

  /** Commits a changed endpoint, then adopts it in memory. */
  private async saveEndpoint(ep: EndpointRecord): Promise<void> {
    await this.store.commit([put('endpoint', ep.id, ep)]);
    this.endpoints.set(ep.id, ep);
  }

  private requireNetwork(networkId: string): NetworkRecord {
    const net = this.networks.get(networkId);
    if (!net) throw tsnetError('TSN_UNKNOWN_NETWORK', `NetworkID "${networkId}" is not a tsnet network (or was lost)`);
    return net;
  }

  /**
   * The creation order that keeps crashes harmless: the record is committed first, pending, then the kernel steps
   * run; if they fail (and were rolled back) the record goes again. Memory never runs ahead of disk.
   */
  private async recordThenBuild<C extends 'network' | 'endpoint'>(
    collection: C,
    map: Map<string, Collections[C]>,
    done: Collections[C],
    steps: Step[],
    shared: { ops: StoreOp[]; undo: StoreOp[] } = { ops: [], undo: [] },
  ): Promise<void> {
    const rec = { ...done, pending: true as const };
    await this.store.commit([put(collection, rec.id, rec), ...shared.ops]);
    map.set(rec.id, rec);
    try {
      await runSteps(this.kernel, `${collection} ${rec.id.slice(0, 12)}`, steps);
    } catch (err) {
      map.delete(rec.id);
      await this.store.commit([del(collection, rec.id), ...shared.undo]);
      throw err;
    }
  }

  /**
   * A create's second commit, after its kernel work: the record is done, and only then does dockerd get its answer.
   * When it fails the create is undone at once by `undo` (a delete's path); if that fails too, the record stays
   * pending, for the next create of the id or the next start.
   */
  private async commitDone<C extends 'network' | 'endpoint'>(collection: C, map: Map<string, Collections[C]>, done: Collections[C], undo: () => Promise<void>): Promise<void> {
    try {
      await this.store.commit([put(collection, done.id, done)]);
    } catch (err) {
      await undo().catch((e: unknown) => log.error('undoing a create whose last commit failed failed too; the next start undoes it', { error: describeChain(e) }));
      throw err;
    }
    map.set(done.id, done);
  }

  /**
   * Restores tsnet's firewall when something removed part of it behind tsnet's back (`nft flush ruleset`, a firewalld
   * reload, a deleted DOCKER-USER rule): when the cheap check finds a gap, or always with `force` (SIGHUP), the table
   * is synced from the records. It holds the topology lock and every network's lock, so no plugin call's firewall
   * change interleaves with it. True when it synced.
   */
  repairFirewall(force = false): Promise<boolean> {
    let ids: string[] = [];
    const underLocks = (i: number): Promise<boolean> =>
      i < ids.length
        ? this.locks.run(ids[i], () => underLocks(i + 1))
        : (async () => {
            const start = performance.now();
            if (!this.needsFirewall()) return false;
            const repaired = force || !(await this.kernel.firewall.intact());
            if (repaired) await this.syncFirewall();
            emit({ kind: 'firewall', forced: force, repaired, ms: elapsed(start) });
            return repaired;
          })();
    // The ids are read under `topology`: no network can be created or deleted from then on.
    return this.topology.run(() => {
      ids = [...this.networks.keys()].sort();
      return underLocks(0);
    });
  }

  /**
   * First thing at start: creates cut off between their pending and done commits were never answered as a success,
   * so dockerd does not know them. Each is removed by its delete's path (whatever part of its kernel work was done:
   * links, firewall elements, routes, host addresses, its parent claim), then its record; one whose removal fails
   * stays pending for the next start. Endpoints first: a pending network cannot have any, but its records say so.
   */
  async undoPending(): Promise<void> {
    // Each is looked up again under its lock: were this ever run beside plugin calls, a create in progress (pending
    // until its lock is released) must not be taken for a cut-off one.
    for (const { id, networkId } of [...this.endpoints.values()].filter((e) => e.pending)) {
      await withLogContext({ networkId, endpointId: id }, () =>
        this.locks.run(networkId, async () => {
          const ep = this.endpoints.get(id);
          if (!ep?.pending) return;
          log.warn('undoing an endpoint whose create was cut off before dockerd got an answer');
          await this.removeEndpoint(ep).catch((err: unknown) => log.error('undoing a cut-off endpoint create failed', { error: describeChain(err) }));
        }),
      );
    }
    for (const { id } of [...this.networks.values()].filter((n) => n.pending)) {
      await withLogContext({ networkId: id }, () =>
        this.networkWide(id, async () => {
          const net = this.networks.get(id);
          if (!net?.pending) return;
          log.warn('undoing a network whose create was cut off before dockerd got an answer');
          await this.removeNetwork(net).catch((err: unknown) => log.error('undoing a cut-off network create failed', { error: describeChain(err) }));
        }),
      );
    }
    // What reconcile reads of the kernel next must not hold the links being undone.
    await this.reaper.flush();
  }

  /**
   * Makes the kernel match the store after a start: reads the host once in bulk (links with addresses, routes, the
   * firewall's tables, the sysctls repairs would write), plans the repairs in memory (reconcile-plan.ts) and applies
   * only those (reconcile-apply.ts): lost bridges, addresses, routes and not-yet-joined veths come back, links this
   * instance created that no record owns go, the firewall is patched or rebuilt, host ports are held again.
   */
  async reconcile(): Promise<void> {
    const start = performance.now();
    await this.undoPending();
    const [tombstones, links, v4, v6, firewall] = await Promise.all([
      this.store.all('tombstone'),
      this.kernel.links(),
      this.kernel.routes(false),
      this.kernel.routes(true),
      this.kernel.firewall.inspect(),
    ]);
    const endpoints = [...this.endpoints.values()];
    const input = {
      owner: this.kernel.owner,
      networks: [...this.networks.values()],
      endpoints,
      parents: [...this.parents.values()],
      tombstones: tombstones.map((t) => t.link),
      forwardGuard: this.forwarding.families,
      links: new Map(links.map((l) => [l.name, l])),
      routes: [...v4, ...v6],
      firewall,
      heldPorts: new Set(endpoints.filter((e) => this.ports.holds(e.id)).map((e) => e.id)),
    };
    const keys = sysctlsToRead(input);
    const sysctls = new Map(await Promise.all(keys.map(async (k) => [k, await this.kernel.readSysctl(k)] as const)));
    const plan = planReconcile({ ...input, sysctls });
    await applyPlan(plan, this.applyTarget(links));
    emit({ kind: 'reconcile', ms: elapsed(start), drift: driftByKind(plan) });
  }

  /** What applying a plan acts on; `links`: the host's links as the plan read them (for Docker's bridges). */
  private applyTarget(links: LinkInfo[]): ApplyTarget {
    return {
      kernel: this.kernel,
      store: this.store,
      claimForwarding: async (changes) => {
        const before = this.forwarding.families.length;
        await this.forwarding.claim([{ name: 'reconcile', changes }]);
        return this.forwarding.families.length !== before;
      },
      forgetEndpoints: (ids) => ids.forEach((id) => this.endpoints.delete(id)),
      firewallWant: () => firewallWant([...this.networks.values()], [...this.endpoints.values()], this.forwarding.families, links),
      restorePorts: (id, ports) => this.ports.restore(id, ports),
    };
  }

  /**
   * Makes tsnet's table exactly what the records imply (lost rules come back, stale ones go), or removes it when
   * nothing needs it: inspected first, so only what differs changes (nothing when nothing does). Reconcile does the
   * same at start; it must not overlap a plugin call's firewall change.
   */
  async syncFirewall(): Promise<void> {
    const [links, have] = await Promise.all([this.kernel.links(), this.kernel.firewall.inspect()]);
    const target = this.applyTarget(links);
    await applyPlan(planFirewall(target.firewallWant(), have), target);
  }
}
