/**
 * tsnet's IPAM contract, the TypeScript side of libnetwork's ipamapi. The protocol layer maps IpamDriver.* calls
 * onto it; validation of the wire shapes happens before, semantic validation (CIDRs, ranges) inside.
 */

export const LOCAL_ADDRESS_SPACE = 'tsnet-local';
export const GLOBAL_ADDRESS_SPACE = 'tsnet-global';

/** RequestAddress option dockerd sets when it asks for the network gateway. */
export const REQUEST_ADDRESS_TYPE = 'RequestAddressType';
export const GATEWAY_ADDRESS_TYPE = 'com.docker.network.gateway';
/** Option asking for the next address after the last one handed out instead of the lowest free one. */
export const SERIAL_OPTION = 'com.docker.network.ipam.serial';

export interface PoolRequest {
  addressSpace: string;
  /** CIDR, or empty to pick a default pool of the family given by v6. */
  pool: string;
  /** CIDR inside pool (`--ip-range`), or empty. */
  subPool: string;
  options: Record<string, string>;
  v6: boolean;
}

export interface AllocatedPool {
  poolId: string;
  /** Canonical CIDR. */
  pool: string;
  data: Record<string, string>;
}

export interface AddressRequest {
  poolId: string;
  /** Plain address to reserve, or empty for any free one (inside the ip-range when there is one). */
  address: string;
  options: Record<string, string>;
}

export interface AllocatedAddress {
  /** CIDR with the pool's prefix length. */
  address: string;
  data: Record<string, string>;
}

export interface IpamCapabilities {
  requiresMACAddress: boolean;
  requiresRequestReplay: boolean;
}

export interface Ipam {
  capabilities(): IpamCapabilities;
  defaultAddressSpaces(): { local: string; global: string };
  /**
   * Reserves a pool. Identical requests share one PoolID and bump its reference count; a pool overlapping a
   * different one in the same address space is refused (TSN_POOL_OVERLAP). Committed before it resolves.
   */
  requestPool(req: PoolRequest): Promise<AllocatedPool>;
  /** Drops one reference; the pool and its addresses go with the last. Unknown ids succeed (dockerd replays). */
  releasePool(poolId: string): Promise<void>;
  /** Reserves one address; concurrent calls never get the same one. Committed before it resolves. */
  requestAddress(req: AddressRequest): Promise<AllocatedAddress>;
  /** Frees an address; unknown pools or addresses succeed quietly. */
  releaseAddress(poolId: string, address: string): Promise<void>;
}
