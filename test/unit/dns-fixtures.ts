import dgram from 'node:dgram';
import net from 'node:net';
import * as dnsPacket from 'dns-packet';
import type { ContainerInfo } from '../../src/docker/contract';
import type { DnsNetwork, QueryContext } from '../../src/dns/contract';

/** Builds queries with dns-packet, an encoder independent of src/dns/wire.ts. */
export interface QueryOptions {
  id?: number;
  rd?: boolean;
  /** Adds an OPT record offering this UDP payload size. */
  udpSize?: number;
  dnssecOk?: boolean;
}

export function query(name: string, type: dnsPacket.RecordType, o: QueryOptions = {}): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: o.id ?? 1,
    flags: o.rd === false ? 0 : dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type, class: 'IN' }],
    additionals:
      o.udpSize === undefined
        ? []
        : [
            {
              type: 'OPT',
              name: '.',
              udpPayloadSize: o.udpSize,
              extendedRcode: 0,
              ednsVersion: 0,
              flags: o.dnssecOk ? dnsPacket.DNSSEC_OK : 0,
              flag_do: o.dnssecOk ?? false,
              options: [],
            },
          ],
  });
}

/** A bare query header with QDCOUNT `qd` and nothing else. */
export function header(qd: number, id = 1): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(id, 0);
  h.writeUInt16BE(0x0100, 2);
  h.writeUInt16BE(qd, 4);
  return h;
}

/** An answer's data whatever its type (OPT records have none). */
export function rdata(x: dnsPacket.Answer): unknown {
  return 'data' in x ? x.data : undefined;
}


export const NET_FRONT = 'f'.repeat(64);
export const NET_BACK = 'b'.repeat(64);
export const NET_OTHER = 'e'.repeat(64);

export const networks: DnsNetwork[] = [
  { id: NET_FRONT, internal: false, subnets: ['172.30.0.0/24', 'fd00:30::/64'], hostAddresses: ['172.30.0.1'] },
  { id: NET_BACK, internal: true, subnets: ['172.31.0.0/20'], hostAddresses: ['172.31.0.1'] },
];

/** Containers: web on front (v4+v6) and back, api on back, two "shared" alias holders, one on a foreign network. */
export const containers: ContainerInfo[] = [
  {
    id: '1'.repeat(64),
    name: 'web',
    hostname: '111111111111',
    networks: [
      { networkId: NET_FRONT, networkName: 'front', ipv4: '172.30.0.2', ipv6: 'fd00:30::2', aliases: ['shared', 'www'] },
      { networkId: NET_BACK, networkName: 'back', ipv4: '172.31.0.2', aliases: [] },
    ],
  },
  {
    id: '2'.repeat(64),
    name: 'api',
    hostname: 'api-host',
    networks: [{ networkId: NET_BACK, networkName: 'back', ipv4: '172.31.0.3', aliases: ['shared', 'Bad_Alias!'] }],
  },
  {
    id: '3'.repeat(64),
    name: 'db',
    hostname: 'db',
    networks: [
      { networkId: NET_FRONT, networkName: 'front', ipv4: '172.30.0.4', aliases: ['shared'] },
      { networkId: NET_OTHER, networkName: 'bridge', ipv4: '172.17.0.9', aliases: ['foreign'] },
    ],
  },
];

export const ctx = (over: Partial<QueryContext> = {}): QueryContext => ({
  transport: 'udp',
  source: '127.0.0.1',
  localAddress: '172.30.0.1',
  mayForward: true,
  ...over,
});

export type Reply = dnsPacket.DecodedPacket & { rcode: string };

/** Decodes a reply with dns-packet (independent of src/dns/wire.ts); fails on null or a pending reply. */
export function decode(out: Buffer | null | Promise<Buffer | null>): Reply {
  if (!(out instanceof Buffer)) throw new Error('expected a synchronous reply');
  const p = dnsPacket.decode(out);
  const rcodes = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];
  return { ...p, rcode: rcodes[(p.flags ?? 0) & 0xf] ?? `RCODE${(p.flags ?? 0) & 0xf}` };
}

/** One UDP query to a listener on loopback; resolves with the first datagram back. */
export function udpAsk(port: number, msg: Buffer, address = '127.0.0.1'): Promise<Buffer> {
  return udpTry(port, msg, address).then((r) => r ?? Promise.reject(new Error('no reply')));
}

/** Like udpAsk, but gives up (undefined) after `waitMs` without a reply (none when waitMs is absent). */
export function udpTry(port: number, msg: Buffer, address = '127.0.0.1', waitMs?: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket(net.isIPv6(address) ? 'udp6' : 'udp4');
    const timer = waitMs === undefined ? undefined : setTimeout(() => done(undefined), waitMs);
    const done = (m: Buffer | undefined) => {
      clearTimeout(timer);
      s.close();
      resolve(m);
    };
    s.once('message', done);
    s.once('error', reject);
    s.send(msg, port, address);
  });
}
