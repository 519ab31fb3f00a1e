import * as dnsPacket from 'dns-packet';

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
