import fs from 'node:fs';
import type { Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { Backend } from '../../src/protocol/routes';
import { routes } from '../../src/protocol/routes';
import { createApp } from '../../src/protocol/server';
import { closeServer, listenUnix } from '../../src/unix-server';
import { pluginCall } from '../harness/tsnet';
import { settled } from './settled';

/**
 * The socket listens before tsnet has loaded its state: the handshake is answered at once, capability calls once the
 * state is loaded, every other call once the kernel is reconciled too.
 */
let dir: string;
let socket: string;
let server: Server;
let load: (b: Backend) => void;
let reconcile: () => void;

const backend = {
  driver: { capabilities: () => ({ scope: 'local', connectivityScope: 'global' }), endpointOperInfo: () => Promise.resolve({}) },
  ipam: { capabilities: () => ({ requiresMACAddress: false, requiresRequestReplay: false }) },
} as unknown as Backend;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-wait-'));
  socket = path.join(dir, 'w.sock');
  const loaded = new Promise<Backend>((r) => (load = r));
  const ready = new Promise<void>((r) => (reconcile = r));
  server = await listenUnix(createApp(routes(), loaded, ready), socket);
});

afterEach(async () => {
  load(backend);
  reconcile();
  await closeServer(server);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('the handshake is answered before the state is loaded', async () => {
  expect(await pluginCall(socket, 'Plugin.Activate', '')).toMatchObject({ status: 200, body: { Implements: ['NetworkDriver', 'IpamDriver'] } });
});

test('capability calls wait for the state, not for the reconcile', async () => {
  const caps = pluginCall(socket, 'NetworkDriver.GetCapabilities', '');
  expect(await settled(caps)).toBe(false);
  load(backend);
  expect(await caps).toMatchObject({ status: 200, body: { Scope: 'local', ConnectivityScope: 'global' } });
});

test('a call on an endpoint waits for the reconcile after the state is loaded', async () => {
  const info = pluginCall(socket, 'NetworkDriver.EndpointOperInfo', JSON.stringify({ NetworkID: 'n1', EndpointID: 'e1' }));
  load(backend);
  expect(await settled(info)).toBe(false);
  reconcile();
  expect(await info).toMatchObject({ status: 200 });
});
