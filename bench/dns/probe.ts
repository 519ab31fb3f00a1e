/** One A query over UDP from the bench itself: is a server up, and does it answer a name with what it should. */
import dgram from 'node:dgram';
import { sleep } from '../../test/harness/exec';

export function aQuery(id: number, name: string): Buffer {
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'ascii')]));
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2); // RD
  header.writeUInt16BE(1, 4);
  return Buffer.concat([header, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

export interface ProbeAnswer {
  rcode: number;
  answers: number;
}

/** Sends one query and waits `timeoutMs` for the reply with its ID; undefined when none came. */
export function probe(address: string, port: number, name: string, timeoutMs = 1000): Promise<ProbeAnswer | undefined> {
  const id = Math.floor(Math.random() * 0xffff);
  const sock = dgram.createSocket('udp4');
  return new Promise((resolve) => {
    const done = (a: ProbeAnswer | undefined) => {
      clearTimeout(timer);
      sock.close();
      resolve(a);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.on('error', () => done(undefined));
    sock.on('message', (m) => {
      if (m.length >= 12 && m.readUInt16BE(0) === id) done({ rcode: m[3] & 0x0f, answers: m.readUInt16BE(6) });
    });
    sock.send(aQuery(id, name), port, address);
  });
}

/** Waits until `name` is answered with `answers` records (NOERROR), `timeoutMs` at most. */
export async function waitAnswered(address: string, port: number, name: string, answers: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: ProbeAnswer | undefined;
  while (Date.now() < deadline) {
    last = await probe(address, port, name, 500);
    if (last?.rcode === 0 && last.answers === answers) return;
    await sleep(100);
  }
  const got = last ? `rcode ${last.rcode}, ${last.answers} answers` : 'no reply';
  throw new Error(`${address}:${port} does not answer ${name} with ${answers} A records after ${timeoutMs} ms (${got})`);
}
