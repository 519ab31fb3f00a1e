import fs from 'node:fs';
import type { Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { Backend, Route } from '../../src/protocol/routes';
import { routes } from '../../src/protocol/routes';
import { createApp } from '../../src/protocol/server';
import { listenUnix } from '../../src/unix-server';
import { EmptySchema } from '../../src/protocol/schemas';
import { captureLogs } from '../harness/logs';
import { pluginCall } from '../harness/tsnet';

/** Hostile bodies and handlers that throw the unloggable: every call gets one reply and the server keeps serving. */
let dir: string;
let socket: string;
let server: Server;
let logged: string[];
let restoreLogs: () => void;

/** A value nested `n` levels deep inside `Options`, as JSON text (JSON.stringify of it would itself overflow). */
const deepBody = (n: number) => `{"NetworkID":"${'a'.repeat(64)}","Options":{"x":${'['.repeat(n)}${']'.repeat(n)}}}`;

/** Thrown by a handler: no message, no toString, every property access throws. */
const unloggable = new Proxy(Object.create(null) as object, {
  get() {
    throw new Error('poisoned');
  },
});

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-robust-'));
  socket = path.join(dir, 'r.sock');
  // Logs are on (and at debug) here: the crash was in formatting the logged request.
  ({ lines: logged, restore: restoreLogs } = captureLogs('debug'));
  const table: Record<string, Route> = {
    ...routes(),
    // Deliberately not Errors: what a buggy dependency might throw.
    // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
    'Test.Throw': { schema: EmptySchema, wait: 'nothing', handle: () => Promise.reject(unloggable) },
    'Test.ThrowSync': {
      schema: EmptySchema,
      wait: 'nothing',
      handle: () => {
        // eslint-disable-next-line @typescript-eslint/only-throw-error
        throw unloggable;
      },
    },
  };
  const backend = {
    driver: { createNetwork: () => Promise.reject(new Error('refused')) },
    ipam: {},
  } as unknown as Backend;
  server = await listenUnix(createApp(table, Promise.resolve(backend), Promise.resolve()), socket);
});

afterEach(async () => {
  const closed = new Promise((r) => server.close(r));
  server.closeAllConnections(); // before the fix, calls that never got a reply keep theirs open
  await closed;
  restoreLogs();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a body nested 5,000 deep gets 400 naming the depth, and the server keeps answering', async () => {
  const res = await pluginCall(socket, 'NetworkDriver.CreateNetwork', deepBody(5000));
  expect(res.status).toBe(400);
  expect((res.body as { Err: string }).Err).toMatch(/"body".*deeper than 64/);
  expect((await pluginCall(socket, 'Plugin.Activate', '')).status).toBe(200);
});

test('a body nested just below the cap is parsed; its failure is logged as a bounded summary, never the raw body', async () => {
  const res = await pluginCall(socket, 'NetworkDriver.CreateNetwork', deepBody(60));
  expect(res).toMatchObject({ status: 500, body: { Err: 'refused' } });
  const line = logged.find((l) => l.includes('plugin call failed'));
  expect(line).toBeDefined();
  const entry = JSON.parse(line!) as { bytes: number; request: string; networkId: string };
  expect(entry).toMatchObject({ bytes: deepBody(60).length, networkId: 'a'.repeat(64) });
  expect(entry.request.length).toBeLessThanOrEqual(300);
  expect(entry.request).not.toContain('['.repeat(60));
});

test('a huge body is logged by size and a capped excerpt', async () => {
  const body = JSON.stringify({ NetworkID: 'b'.repeat(64), Options: { big: 'x'.repeat(1_000_000) } });
  const res = await pluginCall(socket, 'NetworkDriver.CreateNetwork', body);
  expect(res.status).toBe(500);
  for (const l of logged) expect(l.length).toBeLessThan(2_000);
});

test.each(['Test.Throw', 'Test.ThrowSync'])('%s: a handler throwing a value whose logging throws still gets one reply', async (method) => {
  const res = await pluginCall(socket, method, '');
  expect(res.status).toBe(500);
  expect((res.body as { Err: string }).Err).toEqual(expect.any(String));
  expect((await pluginCall(socket, 'Plugin.Activate', '')).status).toBe(200);
});
