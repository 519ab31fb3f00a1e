import { tsnetError } from '../errors';
import type { FwNetwork, Kernel, KernelChange, LinkInfo, RouteInfo } from '../kernel/contract';
import type { EndpointRecord, HostAddress, NetworkRecord, ParentRecord } from '../store/records';
import type { CreateEndpointRequest, CreateNetworkRequest, EndpointInterface, HostAddressPool, JoinResponse, PortBinding } from './contract';
import type { ParentChoice } from './parent';
import type { PortWant } from './port-allocator';
import type { Step } from './steps';

/** What a mode may read of the host and of the other tsnet networks while it plans a network. */
export interface HostView {
  link(name: string): Promise<LinkInfo | undefined>;
  links(): Promise<LinkInfo[]>;
  /** Links the other tsnet networks claim (bridges, parents, shims). */
  claimed: ReadonlySet<string>;
  /** The other tsnet networks. */
  networks: readonly NetworkRecord[];
  /** Parent links child-link networks share, by name. */
  parents: ReadonlyMap<string, ParentRecord>;
  /** tsnet's IPAM, for addresses the network itself needs on the host. */
  hostAddresses: HostAddressPool;
}

/** The host's links and routes as reconcile read them at start (before any repair). */
export interface HostState {
  links: ReadonlyMap<string, LinkInfo>;
  routes: readonly RouteInfo[];
}

/** How an endpoint stands after a restart, as its mode sees the host's links. */
export interface EndpointRepair {
  /** Host links the endpoint owns that must survive the orphan sweep. */
  wanted: string[];
  /** Its creation steps must run again (its links are missing and it was never joined). */
  rebuild: boolean;
  /** Changes restoring what it lost short of a rebuild (routes, a veth off its bridge); applied after its network's repair. */
  changes?: KernelChange[];
  /** Why it cannot be restored, when it cannot (logged; dockerd's Leave/DeleteEndpoint will clean up). */
  lost?: string;
}

/**
 * One data-plane mode, for networks of record type `N` and endpoints of record type `E`: pure planning plus the
 * kernel steps. The driver around it owns state, locking, persistence and ordering, so every mode gets crash safety
 * the same way. Options are parsed once, in planNetwork, into the record's typed fields.
 */
export interface NetworkMode<N extends NetworkRecord, E extends EndpointRecord> {
  /** The `-o mode` value, which is also the records' `mode`. */
  readonly name: N['mode'];
  isEndpoint(ep: EndpointRecord): ep is E;
  /**
   * Validates options against the host and decides the record; touches nothing but the host addresses it reserves
   * (listed by reservedAddresses; the driver releases them when the network is not made, or goes).
   */
  planNetwork(req: CreateNetworkRequest, host: HostView): Promise<N>;
  /** The shared parent link the network's links go on (the driver reference-counts it); undefined for none. */
  parentOf?(net: N): ParentChoice;
  /** Addresses reserved in tsnet's IPAM for the network. */
  reservedAddresses?(net: N): HostAddress[];
  /** Links the network's record claims (for conflict checks and reconciliation). */
  networkLinks(net: N): string[];
  setupSteps(net: N, kernel: Kernel): Step[];
  /**
   * Kernel steps bringing an existing network back to its record after a restart. Idempotent writes (sysctls) are
   * always among them: a crash may have come before they were made.
   */
  repairSteps(net: N, links: ReadonlyMap<string, LinkInfo>): Step[];
  /** What the firewall enforces for the network; undefined when the mode has no firewall part. */
  firewallView(net: N): FwNetwork | undefined;
  /** Links tsnet created for the network; the driver deletes them in the background when the network goes. */
  ownedLinks(net: N): string[];
  /**
   * Idempotently undoes the rest of what setupSteps made (firewall elements, addresses on adopted links). Runs after
   * the network's removal is committed.
   */
  releaseNetwork(net: N, kernel: Kernel): Promise<void>;
  /** `peers`: the network's other endpoints. What dockerd gets back follows from the record: {@link interfaceReply}. */
  planEndpoint(net: N, req: CreateEndpointRequest, peers: readonly E[]): E;
  /** Kernel work of CreateEndpoint. */
  endpointSetupChanges(net: N, ep: E): KernelChange[];
  /** Kernel removals of DeleteEndpoint besides its links (applied before the record goes; already-gone is fine). */
  endpointRemovalChanges?(net: N, ep: E): KernelChange[];
  /** Kernel work of Join, before the reply (the link dockerd moves into the sandbox, if it is made then). */
  joinChanges(net: N, ep: E): KernelChange[];
  /** Host links to delete at Leave (the sandbox gave them back, or took them with it). */
  leaveLinks(ep: E): string[];
  /** Links to delete when the endpoint goes. */
  endpointLinks(ep: E): string[];
  /** The endpoint's state after a restart, given the host's links (as they were before the network's repair). */
  endpointRepair(net: N, ep: E, host: HostState): EndpointRepair;
  joinResponse(net: N, ep: E): JoinResponse;
  /** Free-form data for `docker inspect`. */
  operInfo(net: N, ep: E): Record<string, unknown>;
  /** Ports to publish for the endpoint; undefined when the mode publishes none (the host reaches it directly). */
  portWants?(net: N, ep: E, bindings: PortBinding[]): PortWant[];
}

/** A network with its mode bound: what the driver calls, with endpoints checked to belong to the mode. */
export interface BoundNetwork {
  readonly net: NetworkRecord;
  networkLinks(): string[];
  setupSteps(kernel: Kernel): Step[];
  repairSteps(links: ReadonlyMap<string, LinkInfo>): Step[];
  firewallView(): FwNetwork | undefined;
  ownedLinks(): string[];
  releaseNetwork(kernel: Kernel): Promise<void>;
  parent(): ParentChoice | undefined;
  reservedAddresses(): HostAddress[];
  planEndpoint(req: CreateEndpointRequest, peers: readonly EndpointRecord[]): EndpointRecord;
  endpointSetupChanges(ep: EndpointRecord): KernelChange[];
  endpointRemovalChanges(ep: EndpointRecord): KernelChange[];
  joinChanges(ep: EndpointRecord): KernelChange[];
  leaveLinks(ep: EndpointRecord): string[];
  endpointLinks(ep: EndpointRecord): string[];
  endpointRepair(ep: EndpointRecord, host: HostState): EndpointRepair;
  joinResponse(ep: EndpointRecord): JoinResponse;
  operInfo(ep: EndpointRecord): Record<string, unknown>;
  /** undefined when the mode publishes no ports. */
  portWants(ep: EndpointRecord, bindings: PortBinding[]): PortWant[] | undefined;
}

/**
 * CreateEndpoint's reply: the interface fields tsnet filled, i.e. those the request left empty. Only the MAC can be
 * (a mode with its own MACs picks one); the addresses are dockerd's IPAM's. A repeated request gets the same reply.
 */
export function interfaceReply(ep: EndpointRecord, asked: EndpointInterface): EndpointInterface {
  return asked.macAddress === undefined && ep.mac !== undefined ? { macAddress: ep.mac } : {};
}

/** Binds `mode` to `net`; an endpoint of another mode handed to it is refused (a corrupt or mismatched record). */
export function bindMode<N extends NetworkRecord, E extends EndpointRecord>(mode: NetworkMode<N, E>, net: N): BoundNetwork {
  const own = (ep: EndpointRecord): E => {
    if (mode.isEndpoint(ep)) return ep;
    throw tsnetError('TSN_INTERNAL', `endpoint ${ep.id.slice(0, 12)} (mode ${ep.mode}) is not an endpoint of ${mode.name} network ${net.id.slice(0, 12)}`);
  };
  return {
    net,
    networkLinks: () => mode.networkLinks(net),
    setupSteps: (kernel) => mode.setupSteps(net, kernel),
    repairSteps: (links) => mode.repairSteps(net, links),
    firewallView: () => mode.firewallView(net),
    ownedLinks: () => mode.ownedLinks(net),
    releaseNetwork: (kernel) => mode.releaseNetwork(net, kernel),
    parent: () => mode.parentOf?.(net),
    reservedAddresses: () => mode.reservedAddresses?.(net) ?? [],
    planEndpoint: (req, peers) => mode.planEndpoint(net, req, peers.map(own)),
    endpointSetupChanges: (ep) => mode.endpointSetupChanges(net, own(ep)),
    endpointRemovalChanges: (ep) => mode.endpointRemovalChanges?.(net, own(ep)) ?? [],
    joinChanges: (ep) => mode.joinChanges(net, own(ep)),
    leaveLinks: (ep) => mode.leaveLinks(own(ep)),
    endpointLinks: (ep) => mode.endpointLinks(own(ep)),
    endpointRepair: (ep, host) => mode.endpointRepair(net, own(ep), host),
    joinResponse: (ep) => mode.joinResponse(net, own(ep)),
    operInfo: (ep) => mode.operInfo(net, own(ep)),
    portWants: (ep, bindings) => mode.portWants?.(net, own(ep), bindings),
  };
}
