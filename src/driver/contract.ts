/**
 * tsnet's network driver contract, the TypeScript side of libnetwork's driverapi (remote flavour). The protocol
 * layer turns NetworkDriver.* wire calls into these typed calls; nothing here knows about HTTP.
 */

/**
 * One subnet as dockerd's IPAM handed it over (CreateNetwork IPv4Data/IPv6Data), parsed by the protocol layer:
 * every value is canonical text of the entry's family, and the gateway and aux addresses are addresses of the pool.
 */
export interface IpamData {
  addressSpace: string;
  /** Canonical CIDR. */
  pool: string;
  /** address/prefix-of-pool, or undefined when IPAM gave none. */
  gateway?: string;
  /** name → address/prefix-of-pool. */
  auxAddresses: Record<string, string>;
}

export interface CreateNetworkRequest {
  networkId: string;
  /** `-o key=value` driver options (com.docker.network.generic). */
  driverOptions: Record<string, string>;
  enableIPv6: boolean;
  internal: boolean;
  ipv4: IpamData[];
  ipv6: IpamData[];
}

/** Interface data dockerd already decided (IPAM results, --mac-address); empty fields are the driver's to fill. */
export interface EndpointInterface {
  /** IPv4 address/prefix-length (canonical from the protocol layer; the driver checks it is on a subnet). */
  address?: string;
  /** IPv6 address/prefix-length, likewise. */
  addressIPv6?: string;
  macAddress?: string;
}

export interface CreateEndpointRequest {
  networkId: string;
  endpointId: string;
  iface: EndpointInterface;
  /** Endpoint generic options: com.docker.* keys from dockerd plus `--driver-opt` strings. */
  options: Record<string, unknown>;
}

export interface StaticRoute {
  destination: string;
  routeType: 0 | 1;
  nextHop?: string;
}

export interface JoinRequest {
  networkId: string;
  endpointId: string;
  sandboxKey: string;
  options: Record<string, unknown>;
}

export interface JoinResponse {
  /** Link in the host namespace that dockerd moves into the sandbox and renames to dstPrefix + index. */
  srcName: string;
  dstPrefix: string;
  /** Plain address (no prefix). */
  gateway?: string;
  gatewayIPv6?: string;
  staticRoutes: StaticRoute[];
  disableGatewayService: boolean;
}

/** One entry of dockerd's port map (com.docker.network.portmap). */
export interface PortBinding {
  proto: 'tcp' | 'udp' | 'sctp';
  /** Container port. */
  port: number;
  /** '' or absent: the network's default binding. */
  hostIp?: string;
  /** 0: any free port. */
  hostPort: number;
  /** > hostPort: any free port in hostPort..hostPortEnd. */
  hostPortEnd: number;
}

export interface ExternalConnectivityRequest {
  networkId: string;
  endpointId: string;
  portBindings: PortBinding[];
}

/**
 * Host addresses the driver takes from tsnet's own IPAM (a macvlan network's host shim). Implemented by the IPAM
 * driver; the network driver only sees this.
 */
export interface HostAddressPool {
  /**
   * Reserves a free address of the pool `pool` (canonical CIDR) of `addressSpace` when that pool is one of tsnet's,
   * committed before it resolves; undefined when it is not tsnet's pool.
   */
  reserve(addressSpace: string, pool: string): Promise<{ poolId: string; address: string } | undefined>;
  /** Frees what reserve gave; an unknown pool or address succeeds (the pool may have gone first). */
  release(poolId: string, address: string): Promise<void>;
}

export interface Capabilities {
  scope: 'local' | 'global';
  connectivityScope: 'local' | 'global';
}

/** What every tsnet network driver answers. All deletes and Leave are idempotent (dockerd replays them at boot). */
export interface NetworkDriver {
  capabilities(): Capabilities;
  /** Builds the network's data plane and persists it before resolving; on failure nothing is left behind. */
  createNetwork(req: CreateNetworkRequest): Promise<void>;
  /** Removes the data plane tsnet created; unknown ids succeed. */
  deleteNetwork(networkId: string): Promise<void>;
  /** Creates the endpoint's link; resolves with only the interface fields dockerd left empty. */
  createEndpoint(req: CreateEndpointRequest): Promise<EndpointInterface>;
  /** Removes the endpoint's link; unknown ids succeed. */
  deleteEndpoint(networkId: string, endpointId: string): Promise<void>;
  /** Free-form data shown by `docker inspect`. */
  endpointOperInfo(networkId: string, endpointId: string): Promise<Record<string, unknown>>;
  /** Called after createEndpoint with the sandbox; the reply names the link to move into it. */
  join(req: JoinRequest): Promise<JoinResponse>;
  /** The link is already gone with the sandbox or moved back; unknown ids succeed. */
  leave(networkId: string, endpointId: string): Promise<void>;
  /**
   * Publishes the endpoint's ports (called after Join, only for the container's gateway endpoint). All or nothing:
   * a port in use or a bad binding leaves nothing behind.
   */
  programExternalConnectivity(req: ExternalConnectivityRequest): Promise<void>;
  /** Unpublishes; comes before Leave on stop, disconnect or rm, or when another network takes over the gateway. */
  revokeExternalConnectivity(networkId: string, endpointId: string): Promise<void>;
}
