/**
 * The one narrow interface to the host kernel. Every driver goes through it; iproute2.ts implements it with
 * `ip`/`nft` run from argument arrays (never a shell), fake.ts records calls for unit tests.
 *
 * Changes are data so callers can log them, batch them and undo them (see steps.ts).
 */

export type KernelChange =
  | { op: 'bridge.add'; name: string; mtu?: number; mac?: string }
  | { op: 'veth.add'; name: string; peer: string; mtu?: number; peerMac?: string }
  | { op: 'link.master'; name: string; master: string }
  | { op: 'link.up'; name: string }
  | { op: 'link.del'; name: string }
  | { op: 'addr.add'; dev: string; cidr: string }
  | { op: 'addr.del'; dev: string; cidr: string }
  /** Write a sysctl under /proc/sys, e.g. key 'net/ipv6/conf/tsbr-1/disable_ipv6'. */
  | { op: 'sysctl.set'; key: string; value: string };

export interface LinkInfo {
  name: string;
  /** 'bridge', 'veth', 'macvlan', ... or '' for a plain device. */
  kind: string;
  master?: string;
  mtu: number;
  mac: string;
  up: boolean;
  /** Addresses on the link, CIDR. */
  addresses: string[];
}

export interface RouteInfo {
  /** CIDR ('0.0.0.0/0' for default). */
  dst: string;
  dev?: string;
}

/** Thrown by {@link Kernel.apply}: which change failed and how many before it were applied. */
export class KernelChangeError extends Error {
  constructor(
    readonly change: KernelChange,
    readonly applied: number,
    message: string,
  ) {
    super(message);
    this.name = 'KernelChangeError';
  }
}

/** The firewall part of the kernel interface; tsnet's rules live only in its own nftables table. */
export interface Firewall {
  /** Creates tsnet's table and base chains if missing and hooks dockerd's DOCKER-USER chain when present. */
  ensureBase(): Promise<void>;
  /** Removes tsnet's table and its DOCKER-USER rule (when tsnet has no network left); a no-op when absent. */
  removeBase(): Promise<void>;
  /** Allows forwarding among members of one bridge (dockerd's FORWARD policy DROP would drop it). */
  allowIntraBridge(bridge: string): Promise<void>;
  /** Removes what {@link allowIntraBridge} added; a no-op when absent. */
  revokeIntraBridge(bridge: string): Promise<void>;
  /** Bridges currently allowed (for reconciliation). */
  intraBridges(): Promise<string[]>;
}

export interface Kernel {
  /**
   * Applies changes in order (batched where the tool allows). On failure throws {@link KernelChangeError}; changes
   * before the failing one stay applied, so callers undo them.
   */
  apply(changes: KernelChange[]): Promise<void>;
  links(): Promise<LinkInfo[]>;
  link(name: string): Promise<LinkInfo | undefined>;
  routes(v6: boolean): Promise<RouteInfo[]>;
  readonly firewall: Firewall;
  /**
   * The same kernel on its own lane for slow background work (link deletion), so a plugin call's changes never
   * queue behind it.
   */
  readonly background: Kernel;
}
