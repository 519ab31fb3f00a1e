import fs from 'node:fs';
import net from 'node:net';
import { PortAllocator } from '../../src/driver/port-allocator';

/**
 * The sockets that hold published host ports on loopback. With DNAT in place no connection reaches them; without it
 * (e.g. after `nft flush ruleset`) every connection must be closed at once, or fds pile up.
 */
let ports: PortAllocator;
beforeEach(() => {
  ports = new PortAllocator();
});
afterEach(() => ports.closeAll());

const openFds = () => fs.readdirSync('/proc/self/fd').length;

/** Connects and resolves when the server side has closed the connection (no data is ever sent). */
const closedByServer = (port: number) =>
  new Promise<{ data: number }>((resolve, reject) => {
    let data = 0;
    const c = net.connect({ host: '127.0.0.1', port });
    c.on('data', (d: Buffer) => (data += d.length));
    c.on('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' ? undefined : reject(e)));
    c.on('close', () => resolve({ data }));
  });

test('a connection to a held TCP port is closed by tsnet at once; none accumulate', async () => {
  const [held] = await ports.reserve('ep1', [{ proto: 'tcp', family: 4, hostIp: '127.0.0.1', hostPorts: 'ephemeral', containerIp: '172.28.5.2', containerPort: 80 }]);
  const port = held.hostPort;
  await closedByServer(port); // warm-up: the first connection may open lazily allocated fds
  const before = openFds();
  const results = await Promise.all(Array.from({ length: 50 }, () => closedByServer(port)));
  expect(results.every((r) => r.data === 0)).toBe(true);
  expect(openFds()).toBe(before);
  // The port stays held: nothing else can bind it.
  const other = net.createServer();
  await expect(new Promise((resolve, reject) => other.once('error', reject).listen({ host: '127.0.0.1', port, exclusive: true }, () => resolve(other.close())))).rejects.toMatchObject({ code: 'EADDRINUSE' });
});
