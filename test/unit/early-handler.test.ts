import fs from 'node:fs';
import type { Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { EarlyHandler } from '../../src/protocol/early';
import { CallGate, SHUTTING_DOWN } from '../../src/protocol/gate';
import type { Backend } from '../../src/protocol/routes';
import { routes } from '../../src/protocol/routes';
import { createApp } from '../../src/protocol/server';
import { closeServer, listenUnix } from '../../src/unix-server';
import { pluginCall } from '../harness/tsnet';
import { settled } from './settled';

/**
 * The plugin socket before the wire is loaded (src/boot.ts): the handshake is answered at once, every other call is
 * held and answered by the wire once it is attached, and a handshake the wire would refuse gets the wire's error.
 */
let dir: string;
let socket: string;
let server: Server;
let gate: CallGate;
let handler: EarlyHandler;

const backend = {
  driver: { capabilities: () => ({ scope: 'local', connectivityScope: 'global' }) },
  ipam: { capabilities: () => ({ requiresMACAddress: false, requiresRequestReplay: false }) },
} as unknown as Backend;

const attach = () => handler.attach(createApp(routes(), Promise.resolve(backend), Promise.resolve(), gate));

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-early-'));
  socket = path.join(dir, 'e.sock');
  gate = new CallGate();
  handler = new EarlyHandler(gate);
  server = await listenUnix(handler.listener, socket);
});

afterEach(async () => {
  await closeServer(server);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('the handshake is answered before the wire is attached, with the reply the wire gives', async () => {
  const early = await pluginCall(socket, 'Plugin.Activate', '');
  attach();
  const wired = await pluginCall(socket, 'Plugin.Activate', '{}');
  expect(early).toMatchObject({ status: 200, body: { Implements: ['NetworkDriver', 'IpamDriver'] } });
  expect(early.raw).toBe(wired.raw);
});

test('other calls are held, bodies unread, and answered by the wire in their order once it is attached', async () => {
  const caps = pluginCall(socket, 'NetworkDriver.GetCapabilities', '');
  const bad = pluginCall(socket, 'NetworkDriver.CreateNetwork', '{"NetworkID": 7}');
  expect(await settled(caps)).toBe(false);
  attach();
  expect(await caps).toMatchObject({ status: 200, body: { Scope: 'local', ConnectivityScope: 'global' } });
  const refused = await bad;
  expect(refused.status).toBe(400);
  expect(JSON.stringify(refused.body)).toMatch(/NetworkID/);
});

test('a handshake with a body the wire refuses is held and gets the wire error', async () => {
  for (const body of ['[1]', 'not json', '"x"']) {
    const call = pluginCall(socket, 'Plugin.Activate', body);
    expect(await settled(call)).toBe(false);
    attach();
    const r = await call;
    expect(r.status).toBe(400);
    expect(r.body).toEqual({ Err: expect.stringMatching(/^invalid request/) });
    await closeServer(server);
    handler = new EarlyHandler(gate);
    server = await listenUnix(handler.listener, socket);
  }
});

test('once the gate is closed the early handshake is refused with the shutdown error', async () => {
  await gate.close();
  expect(await pluginCall(socket, 'Plugin.Activate', '')).toMatchObject({ status: 503, body: { Err: SHUTTING_DOWN } });
});
