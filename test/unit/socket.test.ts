import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import express from 'express';
import { listenUnix } from '../../src/unix-server';

/** The plugin socket: 0660 from the moment it exists, and a live socket of another process is never unlinked. */
let dir: string;
let socket: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-sock-'));
  socket = path.join(dir, 't.sock');
});
afterEach(() => {
  jest.restoreAllMocks();
  fs.rmSync(dir, { recursive: true, force: true });
});

const app = () => express().get('/', (_q, r) => r.send('ok'));
const connects = (p: string) =>
  new Promise<boolean>((resolve) => {
    const c = net.connect(p, () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });

test('under a permissive umask the socket is 0660 as soon as it is bound, before any connection can be accepted', async () => {
  const modes: number[] = [];
  // Called below with the server as `this`.
  // eslint-disable-next-line @typescript-eslint/unbound-method
  const listen = net.Server.prototype.listen;
  // Right after bind() returns (the file exists), before the event loop could accept a connection.
  jest.spyOn(net.Server.prototype, 'listen').mockImplementation(function (this: net.Server, ...args: unknown[]) {
    const r = (listen as (...a: unknown[]) => net.Server).apply(this, args);
    modes.push(fs.statSync(socket).mode & 0o777);
    return r;
  });
  const old = process.umask(0);
  try {
    const server = await listenUnix(app(), socket);
    expect(process.umask(0)).toBe(0); // the process umask is restored (reading it means setting it)
    server.close();
  } finally {
    process.umask(old);
  }
  expect(modes).toEqual([0o660]);
});

test('a socket another process is serving is refused and left in place', async () => {
  const other = net.createServer();
  await new Promise<void>((r) => other.listen(socket, r));
  try {
    await expect(listenUnix(app(), socket)).rejects.toThrow(/in use by another process/);
    expect(await connects(socket)).toBe(true);
  } finally {
    other.close();
  }
});

test('a stale socket left by a killed process is replaced', async () => {
  spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socket)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  expect(fs.lstatSync(socket).isSocket()).toBe(true);
  const server = await listenUnix(app(), socket);
  expect(await connects(socket)).toBe(true);
  server.close();
});

test("idle connections outlive dockerd's keep-alive (Go's 90 s), so the server never closes one a request is racing on", async () => {
  const server = await listenUnix(app(), socket);
  try {
    expect(server.keepAliveTimeout).toBeGreaterThan(90_000);
  } finally {
    server.close();
  }
});
