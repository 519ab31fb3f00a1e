import fs from 'node:fs';
import type { Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { Backend, Route } from '../../src/protocol/routes';
import { routes } from '../../src/protocol/routes';
import { CallGate, SHUTTING_DOWN, drain } from '../../src/protocol/gate';
import { createApp } from '../../src/protocol/server';
import { closeServer, listenUnix } from '../../src/unix-server';
import { EmptySchema } from '../../src/protocol/schemas';
import { pluginCall } from '../harness/tsnet';

/** Shutdown at the server: a call in flight finishes, calls after it are refused with the Err, the socket goes. */
let dir: string;
let socket: string;
let server: Server;
let gate: CallGate;
let entered: Promise<void>;
let release: () => void;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-drain-'));
  socket = path.join(dir, 'd.sock');
  let markEntered!: () => void;
  entered = new Promise((r) => (markEntered = r));
  const held = new Promise<void>((r) => (release = r));
  const table: Record<string, Route> = {
    ...routes(),
    // A plugin call whose handler runs until the test releases it.
    'Test.Slow': {
      schema: EmptySchema,
      handle: async () => {
        markEntered();
        await held;
        return { Done: true };
      },
    },
  };
  gate = new CallGate();
  server = await listenUnix(createApp(table, Promise.resolve({} as Backend), Promise.resolve(), gate), socket);
});

/** The daemon's stop order: the calls drain (plugin calls), then the socket closes (plugin socket). */
async function shutdown(graceMs: number): Promise<number> {
  const cut = await drain(gate, graceMs);
  await closeServer(server);
  return cut;
}

afterEach(async () => {
  release();
  if (server.listening) {
    const closed = new Promise((r) => server.close(r));
    server.closeAllConnections();
    await closed;
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a call in flight at shutdown completes; calls after it, the handshake included, get 503 "tsnet is shutting down"; then the socket is gone', async () => {
  const slow = pluginCall(socket, 'Test.Slow', '');
  await entered;
  const drained = shutdown(60_000);
  for (const method of ['Plugin.Activate', 'NetworkDriver.CreateNetwork', 'Test.Slow']) {
    expect(await pluginCall(socket, method, '')).toMatchObject({ status: 503, body: { Err: SHUTTING_DOWN } });
  }
  // Still serving the one in flight: the socket stays until it has its reply.
  expect(fs.existsSync(socket)).toBe(true);
  release();
  expect(await slow).toMatchObject({ status: 200, body: { Done: true } });
  expect(await drained).toBe(0);
  expect(fs.existsSync(socket)).toBe(false);
  expect(server.listening).toBe(false);
});

test('with nothing in flight the socket closes at once', async () => {
  expect((await pluginCall(socket, 'Plugin.Activate', '')).status).toBe(200);
  expect(await shutdown(60_000)).toBe(0);
  expect(fs.existsSync(socket)).toBe(false);
});

test('a call still running when the grace ends is cut off and counted; the socket goes anyway', async () => {
  const slow = pluginCall(socket, 'Test.Slow', '');
  await entered;
  expect(await shutdown(0)).toBe(1);
  await expect(slow).rejects.toThrow();
  expect(fs.existsSync(socket)).toBe(false);
});
