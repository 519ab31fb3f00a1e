/**
 * Types shared by the DNS room's modules (wire, zone, server, forwarder, listeners). The room is fed by
 * `src/docker/` (containers) and by daemon.ts (tsnet's networks, from the driver's state); it never imports the
 * driver and never sits on a plugin call.
 */

/** A tsnet network as the DNS room needs it. */
export interface DnsNetwork {
  /** Docker's network ID. */
  id: string;
  /** `--internal`: no listener on it unless asked, and never a forwarded query from it (CVE-2024-29018). */
  internal: boolean;
  /** Its subnets (CIDR), IPv4 and IPv6: PTR names under them are tsnet's, and a query from them is classified. */
  subnets: string[];
  /** Addresses (plain) tsnet put on the host for this network: the bridge's gateway addresses; empty otherwise. */
  hostAddresses: string[];
}

/** The one question of a query (QDCOUNT is always 1 once parsed). */
export interface Question {
  /** Lower-cased, without the trailing dot; `''` for the root. */
  name: string;
  type: number;
  class: number;
}

/** EDNS(0) as the client offered it in its OPT record. */
export interface Edns {
  /** The client's UDP payload size, raised to 512 when it offers less (RFC 6891 §6.2.5). */
  udpSize: number;
  version: number;
  /** DNSSEC OK bit. */
  dnssecOk: boolean;
}

/** A query that parsed: header fields, the question and where it ends on the wire. */
export interface Query {
  id: number;
  /** The header's flags word as received (RD is echoed in the reply). */
  flags: number;
  opcode: number;
  question: Question;
  /** Byte offset just after the question section (the question's wire form is `msg[12, questionEnd)`). */
  questionEnd: number;
  edns?: Edns;
}

export type Transport = 'udp' | 'tcp';

/** Where a query arrived and what the listener allows it. */
export interface QueryContext {
  transport: Transport;
  /** The client's address (plain, IPv4-mapped IPv6 normalised to IPv4). */
  source: string;
  /** The network whose gateway the listener sits on, whose names answer a bare NAME first; undefined on host listeners. */
  networkId?: string;
  /** The address the query arrived on (the listener's): what `ns.ZONE` answers. */
  localAddress: string;
  /** False for internal networks' listeners and for sources inside an internal network's subnet. */
  mayForward: boolean;
}

/** What a listener is: an address and port, and the network it belongs to (none for host addresses). */
export interface ListenerSpec {
  address: string;
  port: number;
  networkId?: string;
  /** Queries through this listener are never forwarded. */
  noForward: boolean;
}

/** Answers a raw query; null drops it (no reply at all). */
export type QueryHandler = (msg: Buffer, ctx: QueryContext) => Buffer | null | Promise<Buffer | null>;

/** Relays queries tsnet does not answer itself to the upstream resolvers (src/dns/forwarder.ts). */
export interface Forwarder {
  /**
   * The upstream's response to `msg` with the client's ID, from the cache when fresh (TTLs counted down), or a
   * SERVFAIL when every upstream failed or timed out. Never rejects; never delays anything but this query.
   */
  forward(msg: Buffer, query: Query, transport: Transport): Promise<Buffer>;
  close(): Promise<void>;
}
