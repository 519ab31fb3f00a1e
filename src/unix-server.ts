import fs from 'node:fs';
import { createServer, type RequestListener, type Server } from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { errnoCode, tsnetError } from './errors';

/*
 * HTTP on a unix socket, for the plugin socket and any other tsnet serves. node:http only: the plugin socket listens
 * before the wire's libraries (express, zod) are loaded.
 */

/** Whether something accepts connections on the unix socket `socket`. */
function served(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socket, () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
}

/**
 * Closes the listener (which unlinks the socket file, so dockerd fails fast instead of retrying a dead socket) and
 * every connection, idle or not.
 */
export async function closeServer(server: Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  await closed;
}

/** Idle plugin connections stay open this long: longer than any client keeps them. */
export const KEEP_ALIVE_MS = 10 * 60_000;

/**
 * Listens on the unix socket with mode 0660 from the moment it exists. The umask is narrowed only around the bind,
 * which Node does synchronously inside listen(), so no other file of this process is created under it and no
 * connection can come in before the mode is right (a chmod after listen leaves that window). A stale socket file
 * left by a crash is replaced; a socket another process is serving, or a path that is not a socket, is refused.
 */
export async function listenUnix(handler: RequestListener, socket: string): Promise<Server> {
  fs.mkdirSync(path.dirname(socket), { recursive: true, mode: 0o755 });
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(socket);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  if (st) {
    if (!st.isSocket()) throw tsnetError('TSN_INVALID_OPTION', `socket path ${socket} exists and is not a socket`);
    if (await served(socket)) throw tsnetError('TSN_STATE_LOCKED', `socket ${socket} is in use by another process (another tsnet?)`);
    fs.unlinkSync(socket);
  }
  return new Promise((resolve, reject) => {
    const old = process.umask(0o117);
    let server: Server;
    try {
      server = createServer(handler).listen(socket, () => resolve(server));
    } finally {
      process.umask(old);
    }
    server.on('error', reject);
    // dockerd's plugin client reuses idle connections (Go keeps them 90 s): a server closing one first (Node's default
    // after 5 s) races a request sent on it, which dockerd resends with an empty body. The client closes first.
    server.keepAliveTimeout = KEEP_ALIVE_MS;
  });
}

/**
 * Serves on a listening unix socket inherited as `fd` (socket activation: src/socket-activation.ts). Its owner made
 * it and set its mode; closing the server closes tsnet's copy only, never unlinks the file, so the owner's copy keeps
 * queueing dockerd's connections while tsnet is down.
 */
export function listenInherited(handler: RequestListener, fd: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer(handler).listen({ fd }, () => resolve(server));
    server.on('error', reject);
    server.keepAliveTimeout = KEEP_ALIVE_MS;
  });
}
