import fs from 'node:fs';
import type { Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { TsnetDriver } from '../../src/driver/driver';
import { TsnetIpam } from '../../src/ipam/driver';
import { FakeKernel } from '../../src/kernel/fake';
import { routes } from '../../src/protocol/routes';
import { createApp } from '../../src/protocol/server';
import { listenUnix } from '../../src/unix-server';
import { SqliteStore } from '../../src/store/sqlite';
import { pluginCall, type PluginResponse } from '../harness/tsnet';

/** tsnet's whole remote API on a real unix socket of its own, with an in-memory store and the kernel faked. */
export interface PluginFixture {
  socket: string;
  store: SqliteStore;
  kernel: FakeKernel;
  driver: TsnetDriver;
  ipam: TsnetIpam;
  call(method: string, body?: unknown): Promise<PluginResponse>;
  /** Stops serving and removes the socket's directory. */
  close(): Promise<void>;
}

export async function startPlugin(): Promise<PluginFixture> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-unit-'));
  const socket = path.join(dir, 'p.sock');
  const store = new SqliteStore(':memory:');
  const kernel = new FakeKernel();
  const ipam = await TsnetIpam.load(store, {
    defaultPoolsV4: [{ base: '10.50.0.0/16', size: 24 }],
    defaultPoolsV6: [{ base: 'fd99::/48', size: 64 }],
    hostRoutes: () => Promise.resolve([]),
  });
  // Wired as daemon.ts does: macvlan host shims take their addresses from tsnet's pools.
  const driver = await TsnetDriver.load(store, kernel, ipam.hostAddresses);
  const server: Server = await listenUnix(createApp(routes(), Promise.resolve({ driver, ipam }), Promise.resolve()), socket);
  return {
    socket,
    store,
    kernel,
    driver,
    ipam,
    call: (method, body = '') => pluginCall(socket, method, body),
    close: async () => {
      await new Promise((r) => server.close(r));
      await driver.stop(); // closes the sockets holding published host ports
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
