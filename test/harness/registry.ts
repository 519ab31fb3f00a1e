import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { type ChildProcess } from 'node:child_process';
import { fileTail, isRunning, patient, spawnDaemon, terminate, waitFor } from './exec';

/**
 * Debian's `docker-registry` (distribution 2.8) on a free loopback port, storing under `dir` (a temp dir of the
 * caller's, removed by it). dockerd treats registries on 127.0.0.0/8 as insecure (plain HTTP) by default, so
 * `docker plugin push 127.0.0.1:PORT/NAME` works without daemon configuration.
 */
export class Registry {
  private constructor(
    /** `127.0.0.1:PORT`, the prefix of references pushed here. */
    readonly address: string,
    private readonly child: ChildProcess,
    readonly logFile: string,
  ) {}

  static async start(dir: string): Promise<Registry> {
    const port = await freePort();
    const config = path.join(dir, 'registry.yml');
    const logFile = path.join(dir, 'registry.log');
    fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
    // YAML is a JSON superset: the configuration is written as JSON.
    fs.writeFileSync(
      config,
      JSON.stringify({ version: 0.1, log: { level: 'warn' }, storage: { filesystem: { rootdirectory: path.join(dir, 'data') } }, http: { addr: `127.0.0.1:${port}` } }),
    );
    const child = spawnDaemon('docker-registry', ['serve', config], { logFile });
    const address = `127.0.0.1:${port}`;
    const timeoutMs = patient(20_000);
    try {
      await waitFor(
        async () => {
          if (!isRunning(child)) throw new Error(`docker-registry exited (code ${child.exitCode})\n${fileTail(logFile)}`);
          return (await status(`http://${address}/v2/`)) === 200;
        },
        timeoutMs,
        () => `docker-registry not answering on ${address} after ${timeoutMs} ms\n${fileTail(logFile)}`,
        200,
      );
    } catch (err) {
      await terminate(child, 5_000);
      throw err;
    }
    return new Registry(address, child, logFile);
  }

  async stop(): Promise<void> {
    await terminate(this.child, 5_000);
  }
}

/** A port nobody listens on now (the kernel's pick; the registry binds it a moment later). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a !== null && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

/** HTTP status of a GET, or 0 when nothing answers. */
function status(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: 2_000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}
