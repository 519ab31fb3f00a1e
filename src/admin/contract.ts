/**
 * What the admin socket answers (src/admin/server.ts) and the `tsnet` CLI reads (src/cli/): JSON shapes only, so
 * the CLI imports nothing of the daemon's rooms.
 */

export interface StatusReport {
  version: string;
  /** The kernel is reconciled with the state and every plugin call is served. */
  ready: boolean;
  uptimeS: number;
  store: { ok: true; ms: number } | { ok: false; error: string };
  networks: NetworkStatus[];
  endpoints: EndpointStatus[];
  pools: PoolStatus[];
}

export interface NetworkStatus {
  id: string;
  mode: 'bridge' | 'macvlan' | 'ipvlan';
  /** The bridge, or the parent link of a macvlan/ipvlan network. */
  link: string;
  subnets: string[];
  internal: boolean;
  endpoints: number;
  /** Addresses taken in tsnet's pools of the network's subnets; absent when another IPAM driver owns them. */
  poolUse?: { used: number; size: string };
  pending: boolean;
}

export interface EndpointStatus {
  id: string;
  networkId: string;
  addresses: string[];
  mac?: string;
  /** Host-side link: the veth on the bridge, or the child link until dockerd moves it. */
  link: string;
  joined: boolean;
  ports: number;
  pending: boolean;
}

export interface PoolStatus {
  id: string;
  pool: string;
  subPool?: string;
  /** Addresses allocated (gateways included). */
  used: number;
  /** Addresses in the pool (a decimal string: IPv6 pools exceed a number). */
  size: string;
}

/** One published port, with the container it belongs to when Docker's API named it. */
export interface PortEntry {
  endpointId: string;
  networkId: string;
  containerId?: string;
  containerName?: string;
  proto: 'tcp' | 'udp' | 'sctp';
  containerPort: number;
  containerIp: string;
  /** Undefined: every local address of the container's family. */
  hostIp?: string;
  hostPort: number;
}

export interface PortsReport {
  ports: PortEntry[];
  /** Why containers are not named (Docker's API unreachable). */
  dockerError?: string;
}

/** One repair of the reconcile plan (src/driver/reconcile-plan.ts), as a line a person reads. */
export interface RepairLine {
  kind: string;
  networkId?: string;
  endpointId?: string;
  description: string;
}

export interface ReconcileReport {
  /** Dry run: what would be done; applied: what was done. */
  applied: boolean;
  repairs: RepairLine[];
}

/** The body of every failed answer (as the plugin socket's). */
export interface AdminError {
  Err: string;
}
