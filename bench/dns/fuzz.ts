/**
 * The listener fuzz of the DNS bench: malformed and mutated packets from a generator at a live listener, over UDP
 * (one datagram each) and TCP (length-framed, pipelined, a connection per batch), counting what comes back.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { sleep } from '../../test/harness/exec';
import { checkAborted } from '../lib/abort';

/** The next packet of a fixed-seed sequence. */
export type PacketSource = () => Buffer;

export interface Sent {
  packets: number;
  seconds: number;
  replies: number;
}

/**
 * Sends `count` datagrams in bursts of `burst`, letting the event loop poll between bursts (replies are read
 * meanwhile), then waits a moment for late replies.
 */
export async function fuzzUdp(address: string, port: number, source: PacketSource, count: number, burst = 32): Promise<Sent> {
  const sock = dgram.createSocket('udp4');
  let replies = 0;
  sock.on('message', () => replies++);
  sock.on('error', () => undefined);
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
  const t0 = performance.now();
  for (let i = 0; i < count; i += burst) {
    checkAborted();
    const sends: Array<Promise<void>> = [];
    for (let k = i; k < Math.min(count, i + burst); k++) {
      sends.push(new Promise((resolve) => sock.send(source(), port, address, () => resolve())));
    }
    await Promise.all(sends);
    // Send callbacks come back without an I/O poll, and libuv reads at most 32 datagrams per poll: bursts of 32 and
    // a turn of the loop after each, or the replies overflow this socket's receive buffer and go uncounted.
    await new Promise((resolve) => setImmediate(resolve));
  }
  const seconds = (performance.now() - t0) / 1000;
  await sleep(500);
  sock.close();
  return { packets: count, seconds, replies };
}

/** One connection: `packets` framed messages written at once, read until the server closes or `idleMs` passes. */
function tcpBatch(address: string, port: number, packets: Buffer[], idleMs: number): Promise<number> {
  return new Promise((resolve) => {
    let bytes = 0;
    const sock = net.connect(port, address);
    const done = () => {
      sock.destroy();
      resolve(bytes);
    };
    sock.setTimeout(idleMs, done);
    sock.on('data', (b) => (bytes += b.length));
    sock.on('error', done);
    sock.on('close', done);
    sock.on('connect', () => {
      const framed = packets.map((p) => {
        const len = Buffer.alloc(2);
        len.writeUInt16BE(Math.min(p.length, 0xffff));
        return Buffer.concat([len, p]);
      });
      sock.end(Buffer.concat(framed));
    });
  });
}

/**
 * `count` packets over TCP, `perConnection` framed messages per connection, `parallel` connections at a time. A
 * server may close a connection at the first bad message: the rest of that batch then goes unread, which counts
 * as sent (it was written) and is what a client that misbehaves gets.
 */
export async function fuzzTcp(address: string, port: number, source: PacketSource, count: number, perConnection = 100, parallel = 8): Promise<Sent> {
  const t0 = performance.now();
  let replies = 0;
  let next = 0;
  const worker = async () => {
    while (next < count) {
      checkAborted();
      const from = next;
      next = Math.min(count, next + perConnection);
      const batch = Array.from({ length: next - from }, source);
      replies += await tcpBatch(address, port, batch, 2_000);
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return { packets: count, seconds: (performance.now() - t0) / 1000, replies };
}
