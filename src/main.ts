import path from 'node:path';
import { type Config, loadConfig, usage } from './config';
import { DnsService } from './dns/service';
import { dnsNetworks } from './dns/networks';
import { DockerEventFeed } from './docker/feed';
import { TsnetDriver } from './driver/driver';
import { describeChain } from './errors';
import { withFaults } from './fault';
import { installProcessGuard } from './guard';
import { TsnetIpam } from './ipam/driver';
import type { LinkInfo } from './kernel/contract';
import { Iproute2Kernel } from './kernel/iproute2';
import { LinkWatcher } from './kernel/link-watch';
import { NftFirewall } from './kernel/nftables';
import { log, setLogLevel } from './log';
import { routes } from './protocol/routes';
import { Reclaim } from './reclaim';
import { createApp, listenUnix } from './protocol/server';
import { type StateLock, lockStateDir } from './state-lock';
import { SqliteStore } from './store/sqlite';

async function main(): Promise<void> {
  const config = loadConfig(process.argv.slice(2));
  if (config === 'help') {
    process.stdout.write(usage + '\n');
    return;
  }
  setLogLevel(config.logLevel);
  // Before the store or the socket is touched: a second tsnet on this state dir stops here, naming the holder.
  const lock = lockStateDir(config.stateDir);
  try {
    await serve(config, lock);
  } catch (err) {
    lock.release();
    throw err;
  }
}

/**
 * Start order matters to dockerd: state is loaded (fast, local), the socket listens, then the kernel is reconciled.
 * Calls that need state wait for reconciliation; the handshake never waits (dockerd gives a plugin ~10 s).
 */
async function serve(config: Config, lock: StateLock): Promise<void> {
  // The firewall reads Docker's bridges from the host links (through the kernel it is part of).
  const links = (): Promise<LinkInfo[]> => kernel.links();
  // withFaults: the test-only crash switch (src/fault.ts); without its environment variables it returns both as given.
  const { kernel, store } = withFaults(new Iproute2Kernel(new NftFirewall(config.fwMark, config.nftTable, { links }), `tsnet:${config.nftTable}`), new SqliteStore(path.join(config.stateDir, 'tsnet.db')));
  const ipam = await TsnetIpam.load(store, {
    defaultPoolsV4: config.defaultPoolsV4,
    defaultPoolsV6: config.defaultPoolsV6,
    hostRoutes: async (v6) => (await kernel.routes(v6)).map((r) => r.dst),
  });
  // The driver takes host addresses (macvlan host shims) from tsnet's own pools.
  const driver = await TsnetDriver.load(store, kernel, ipam.hostAddresses);
  let markReady!: () => void;
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  const server = await listenUnix(createApp(routes(), { driver, ipam }, ready), config.socket);
  log.info('tsnet listening', { socket: config.socket, stateDir: config.stateDir });

  const start = performance.now();
  await driver.reconcile();
  const watcher = new LinkWatcher(() => kernel.firewall.refreshDockerBridges());
  watcher.start();
  markReady();
  // After the socket answers: Docker's API may call tsnet (or not answer) while dockerd boots.
  const feed = new DockerEventFeed({ socketPath: config.dockerSocket });
  const dns = config.dns.enabled ? new DnsService({ config: config.dns, feed, networks: () => dnsNetworks(driver.state().networks) }) : undefined;
  // Subscribed before the feed starts: its first connection is the first pass.
  const reclaim = new Reclaim({ socket: config.socket, dockerSocket: config.dockerSocket, graceMs: config.reclaimGraceMs, feed, driver, ipam });
  if (dns) {
    driver.onNetworksChanged(() => dns.networksChanged());
    await dns.start();
  }
  reclaim.start();
  const { networks, endpoints } = driver.state();
  log.info('tsnet ready', { networks: networks.length, endpoints: endpoints.length, reconcileMs: Math.round(performance.now() - start) });

  const shutdown = (signal: string) => {
    log.info('tsnet stopping', { signal });
    watcher.stop();
    // Listeners close first: nothing answers from a half-stopped tsnet.
    const dnsStopped = (dns?.stop() ?? Promise.resolve())
      .then(() => reclaim.stop())
      .then(() => feed.stop())
      .catch((err: unknown) => log.error('DNS or reclaim did not stop cleanly', { error: describeChain(err) }));
    // Closing the server unlinks the socket, so dockerd fails fast instead of retrying a dead socket for 30 s.
    server.close(() => {
      dnsStopped
        .then(() => driver.stop())
        .then(() => {
          kernel.close();
          return store.close();
        })
        .then(() => {
          lock.release();
          process.exit(0);
        })
        .catch((err: unknown) => {
          log.error('tsnet failed to stop cleanly', { error: describeChain(err) });
          lock.release();
          process.exit(1);
        });
    });
    server.closeAllConnections();
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

installProcessGuard();
main().catch((err: unknown) => {
  log.error('tsnet failed to start', { error: describeChain(err) });
  process.exit(1);
});
