import type { FwNetwork, Kernel, KernelChange, LinkInfo } from '../kernel/contract';
import type { EndpointRecord, NetworkRecord } from '../store/records';
import type { CreateEndpointRequest, CreateNetworkRequest, EndpointInterface, JoinResponse, PortBinding } from './contract';
import type { PortWant } from './port-allocator';
import type { Step } from './steps';

/**
 * One data-plane mode (bridge now; macvlan/ipvlan later): pure planning plus the kernel steps. The driver around it
 * owns state, locking, persistence and ordering, so every mode gets crash safety the same way.
 */
export interface NetworkMode<N extends NetworkRecord = NetworkRecord> {
  /** Validates options and decides the record; touches nothing. */
  planNetwork(req: CreateNetworkRequest, lookupLink: (name: string) => Promise<LinkInfo | undefined>, linksInUse: ReadonlySet<string>): Promise<N>;
  /** Links the network's record claims (for conflict checks and reconciliation). */
  networkLinks(net: N): string[];
  setupSteps(net: N, kernel: Kernel): Step[];
  /**
   * Kernel steps bringing an existing network back to its record after a restart (`link` = its main link, if
   * present). Idempotent writes (sysctls) are always among them: a crash may have come before they were made.
   */
  repairSteps(net: N, link: LinkInfo | undefined): Step[];
  /** What the firewall enforces for the network. */
  firewallView(net: N): FwNetwork;
  /** Links tsnet created for the network; the driver deletes them in the background when the network goes. */
  ownedLinks(net: N): string[];
  /**
   * Idempotently undoes the rest of what setupSteps made (firewall elements, addresses on adopted links). Runs after
   * the network's removal is committed.
   */
  releaseNetwork(net: N, kernel: Kernel): Promise<void>;
  planEndpoint(net: N, req: CreateEndpointRequest): { ep: EndpointRecord; reply: EndpointInterface };
  endpointSetupChanges(net: N, ep: EndpointRecord): KernelChange[];
  /** Links to delete when the endpoint goes. */
  endpointLinks(ep: EndpointRecord): string[];
  joinResponse(net: N, ep: EndpointRecord): JoinResponse;
  /** Ports to publish for the endpoint; undefined when the mode publishes none (the host reaches it directly). */
  portWants?(net: N, ep: EndpointRecord, bindings: PortBinding[]): PortWant[];
}
