/**
 * What tsnet does before the daemon's rooms are loaded: the config, the state lock and the plugin socket listening
 * with the handshake answered (src/protocol/early.ts). Only node's own modules and tsnet's small ones come before the
 * socket listens; the daemon (src/daemon.ts: express, zod, winston and the rest) loads after, so dockerd's handshake
 * is answered in node's start-up time, not in the time it takes to load those.
 */
import type { Server } from 'node:http';
import { type Config, loadConfig, usage } from './config';
import { describeChain } from './errors';
import { EarlyHandler } from './protocol/early';
import { CallGate } from './protocol/gate';
import { type InheritedSocket, takeInheritedSocket } from './socket-activation';
import { type StateLock, lockStateDir } from './state-lock';
import { closeServer, listenInherited, listenUnix } from './unix-server';

/** What the daemon takes over: started here, stopped by its lifecycle. */
export interface Booted {
  config: Config;
  lock: StateLock;
  server: Server;
  handler: EarlyHandler;
  gate: CallGate;
  /** ms from the process's start to the socket listening. */
  listeningMs: number;
  /** The socket systemd (or another activator) passed, if tsnet serves on one. */
  inherited: InheritedSocket | undefined;
  /** Ends the boot's own signal handling (the daemon's takes over). */
  disarm(): void;
}

async function boot(): Promise<void> {
  const config = loadConfig(process.argv.slice(2));
  if (config === 'help') {
    process.stdout.write(usage + '\n');
    return;
  }
  // Before the store or the socket is touched: a second tsnet on this state dir stops here, naming the holder.
  const lock = lockStateDir(config.stateDir);
  const gate = new CallGate();
  const handler = new EarlyHandler(gate);
  // Socket activation: the socket unit owns the socket (and its file); --socket still names the driver.
  const inherited = takeInheritedSocket();
  let server: Server;
  try {
    server = inherited ? await listenInherited(handler.listener, inherited.fd) : await listenUnix(handler.listener, config.socket);
  } catch (err) {
    lock.release();
    throw err;
  }
  const listeningMs = performance.now();
  // A signal before the daemon is loaded: no call has reached tsnet's state yet, so the socket and lock just go.
  const early = () => {
    gate.close().catch(() => undefined);
    const exit = () => {
      lock.release();
      process.exit(0);
    };
    closeServer(server).then(exit, exit);
  };
  process.on('SIGTERM', early).on('SIGINT', early);
  const disarm = () => {
    process.off('SIGTERM', early).off('SIGINT', early);
  };
  // Loading the daemon is ~0.15 s of synchronous work, its three libraries the most of it: loaded one at a time, with
  // the event loop let through between them, a handshake that came meanwhile is answered after one, not all.
  for (const load of [() => import('./log'), () => import('./protocol/schemas'), () => import('./protocol/server')]) {
    await load();
    await new Promise((resolve) => setImmediate(resolve));
  }
  const { run } = await import('./daemon');
  await run({ config, lock, server, handler, gate, listeningMs, inherited, disarm });
}

boot().catch(async (err: unknown) => {
  // The log is loaded here only when needed: winston may be what failed to load.
  try {
    const { log } = await import('./log');
    log.error('tsnet failed to start', { error: describeChain(err) });
  } catch {
    process.stderr.write(`tsnet failed to start: ${describeChain(err)}\n`);
  }
  process.exit(1);
});
