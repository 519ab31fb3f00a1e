/**
 * What the Docker room tells the rest of tsnet. Nothing outside `src/docker/` talks to Docker's API; other rooms
 * see only these types.
 */

/** One container's attachment to one Docker network, as Docker's API reports it. */
export interface ContainerNetwork {
  /** Docker's network ID (64 hex digits), the same ID dockerd gave tsnet in CreateNetwork. */
  networkId: string;
  /** The network's name (the key of `NetworkSettings.Networks`). */
  networkName: string;
  /** Plain address (no prefix length), absent when the network gave the container none. */
  ipv4?: string;
  ipv6?: string;
  /**
   * Further names on this network: `--network-alias`, compose service names, and (API ≥ 1.44) `DNSNames`.
   * Lower-cased, deduplicated, without the container's own name.
   */
  aliases: string[];
}

/** A running container with its networks (stopped containers are not reported). */
export interface ContainerInfo {
  /** Full container ID (64 hex digits). */
  id: string;
  /** Name without Docker's leading `/`. */
  name: string;
  /** `Config.Hostname`. */
  hostname: string;
  networks: ContainerNetwork[];
}

/** A running container's endpoints, as `GET /containers/json` lists them (which endpoint is whose, for `tsnet ports`). */
export interface ContainerEndpoints {
  id: string;
  /** Name without Docker's leading `/`. */
  name: string;
  /** Docker's endpoint ids, the ones dockerd gave tsnet in CreateEndpoint. */
  endpointIds: string[];
}

/** A Docker network as `GET /networks` lists it. */
export interface NetworkInfo {
  id: string;
  name: string;
  driver: string;
  internal: boolean;
  /** `IPAM.Driver`, when the list reports it. */
  ipamDriver?: string;
}

/** One entry of a network's `IPAM.Config`, as Docker reports it (CIDRs and plain addresses, unvalidated text). */
export interface IpamConfigEntry {
  subnet: string;
  /** Absent when the network has no `--ip-range`. */
  ipRange?: string;
  /** Absent when Docker shows none (a gateway the IPAM chose is not always shown). */
  gateway?: string;
  auxAddresses: Record<string, string>;
}

/** One endpoint of a network: joined (keyed by its container in Docker's answer) or not (`ep-` + its id). */
export interface NetworkEndpoint {
  endpointId: string;
  /** CIDR, absent when the endpoint has none. */
  ipv4?: string;
  ipv6?: string;
}

/** A network as `GET /networks/{id}` reports it: its IPAM configuration and every endpoint Docker still has. */
export interface NetworkDetail extends NetworkInfo {
  ipamDriver: string;
  ipamConfig: IpamConfigEntry[];
  endpoints: NetworkEndpoint[];
}

/** What `GET /info` tells tsnet about the daemon. */
export interface DaemonInfo {
  /** The engine's ID (stable per data-root): tells one dockerd from another. */
  id: string;
  /** Drivers of the daemon's networks and its built-in ones (`Plugins.Network`). */
  networkDrivers: string[];
  /** `FirewallBackend.Driver` (`iptables`, `nftables`, ...), absent from daemons older than API 1.48. */
  firewallBackend?: string;
}

/** Whether Docker's API can be read right now (tsnet works either way; only what it learns from Docker waits). */
export type DockerStatus = { up: true; apiVersion: string } | { up: false; error: string };

/**
 * Follows Docker: after every (re)connect a full resync, then `/events`. Listeners are called off any plugin call's
 * path, coalesced (one call for a burst of events).
 */
export interface DockerFeed {
  /** All running containers, whenever the set or any container in it changed. */
  onContainers(listener: (containers: ReadonlyArray<ContainerInfo>) => void): void;
  /** A network was created, destroyed, or a container connected or disconnected (listeners follow networks). */
  onNetworks(listener: (networks: ReadonlyArray<NetworkInfo>) => void): void;
  /** Every change of status; a listener added late hears the current status at once. */
  onStatus(listener: (status: DockerStatus) => void): void;
  start(): void;
  /** Stops following; pending reconnects are cancelled. */
  stop(): Promise<void>;
}
