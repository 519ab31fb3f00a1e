/**
 * The library comparison of the DNS bench: a dns2 3.1.1 `UDPServer` answering the bench's names, A records from a
 * JSON table, the way the card's sidecar would (parse every query into a Packet, build the response, serialise it).
 *
 *   node dns2-server.js ADDRESS PORT TABLE.json TTL
 */
import fs from 'node:fs';
import dns2 from 'dns2';
import { z } from 'zod';

const { Packet } = dns2;

function main(): void {
  const [address, port, tableFile, ttl] = process.argv.slice(2);
  if (!address || !port || !tableFile || !ttl) throw new Error('usage: dns2-server ADDRESS PORT TABLE.json TTL');
  const table = new Map(Object.entries(z.record(z.string(), z.array(z.string())).parse(JSON.parse(fs.readFileSync(tableFile, 'utf8')))));
  const server = dns2.createUDPServer((request, send) => {
    const response = Packet.createResponseFromRequest(request);
    // dns2 types questions[0] as always there; a query without one is answered with its empty response.
    const q = request.questions.at(0);
    if (q) {
      const ips = table.get(q.name.toLowerCase());
      if (!ips) response.header.rcode = 3; // NXDOMAIN
      else if (q.type === Packet.TYPE.A) {
        for (const ip of ips) response.answers.push(Packet.createResourceFromQuestion(q, { type: Packet.TYPE.A, class: Packet.CLASS.IN, ttl: Number(ttl), address: ip }));
      }
    }
    send(response).catch(() => undefined);
  });
  server.on('requestError', () => undefined);
  server.listen(Number(port), address).then(
    () => console.log(`dns2 ${address}:${port} ready`),
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

main();
