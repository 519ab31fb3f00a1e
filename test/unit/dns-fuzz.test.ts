import dgram from 'node:dgram';
import net from 'node:net';
import * as dnsPacket from 'dns-packet';
import { createResolver } from '../../src/dns/resolver';
import { openListener } from '../../src/dns/server';
import { buildZone } from '../../src/dns/zone';
import { fuzzPackets } from '../fuzz/dns-packets';
import { containers, ctx, decode, NET_FRONT, networks, query, udpTry } from './dns-fixtures';

/**
 * Fixed-seed fuzz of the DNS handler and of a real listener (bench target: ≥ 100k packets with the same generator).
 * Properties: nothing throws; a reply is a well-formed response (dns-packet decodes it) with the query's ID; a
 * UDP reply without OPT fits 512 bytes; the listener answers a good query afterwards.
 */
const SEED = 20261202;
const HANDLER_PACKETS = Number(process.env.DNS_FUZZ_PACKETS ?? 20_000);
const SOCKET_PACKETS = 3_000;

function resolver() {
  const r = createResolver();
  r.setZone(buildZone({ zone: 'tsnet', ttl: 5, networks, containers, serial: 1 }));
  return r;
}

test(`${HANDLER_PACKETS} fuzzed packets through the handler: no throw, every reply well-formed`, () => {
  const r = resolver();
  const failures: string[] = [];
  let replies = 0;
  let i = 0;
  for (const p of fuzzPackets(SEED, HANDLER_PACKETS)) {
    i++;
    try {
      const out = r.handle(p, ctx({ networkId: i % 2 ? NET_FRONT : undefined }));
      if (out === null) continue;
      if (!(out instanceof Buffer)) throw new Error('local handler went async');
      replies++;
      const d = dnsPacket.decode(out);
      if (!d.flag_qr || d.id !== p.readUInt16BE(0)) throw new Error('reply is not a response to the query');
      if (!(d.additionals ?? []).some((x) => x.type === 'OPT') && out.length > 512) throw new Error('UDP reply over 512');
    } catch (err) {
      if (failures.length < 10) failures.push(`#${i} ${p.toString('hex').slice(0, 200)}: ${String(err)}`);
    }
  }
  expect(failures).toEqual([]);
  // the corpus exercises both sides: most packets are rejected, a fair share answered
  expect(replies).toBeGreaterThan(HANDLER_PACKETS / 10);
});

/** Asks until a reply comes: after a flood the kernel may have dropped a datagram, which is not a listener fault. */
async function askUntilAnswered(port: number, msg: Buffer): Promise<Buffer> {
  for (let attempt = 0; ; attempt++) {
    const reply = await udpTry(port, msg, '127.0.0.1', 200);
    if (reply || attempt === 20) return reply ?? Buffer.alloc(0);
  }
}

test(`${SOCKET_PACKETS} fuzzed packets at a listener over UDP and TCP, then a good query is still answered`, async () => {
  const r = resolver();
  let handled = 0;
  const l = await openListener({ address: '127.0.0.1', port: 0, networkId: NET_FRONT, noForward: true }, (m, c) => {
    handled++;
    return r.handle(m, c);
  });
  const udp = dgram.createSocket('udp4');
  const tcp = net.connect(l.port, '127.0.0.1');
  tcp.on('error', () => undefined);
  try {
    let sent = 0;
    for (const p of fuzzPackets(SEED + 1, SOCKET_PACKETS)) {
      udp.send(p, l.port, '127.0.0.1');
      if (sent++ % 10 === 0 && !tcp.destroyed) tcp.write(Buffer.concat([Buffer.from([p.length >> 8, p.length & 255]), p]));
      // let the listener keep up, so that most datagrams reach it rather than the kernel's drop counter
      for (let spin = 0; spin < 50 && handled < sent * 0.9; spin++) await new Promise((res) => setImmediate(res));
    }
    expect(handled).toBeGreaterThan(SOCKET_PACKETS * 0.8);
    const after = decode(await askUntilAnswered(l.port, query('web.front.tsnet', 'A')));
    expect(after.answers!.map((a) => [a.type, a.name])).toEqual([['A', 'web.front.tsnet']]);
  } finally {
    udp.close();
    tcp.destroy();
    await l.close();
  }
}, 60_000);
