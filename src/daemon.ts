import module from 'node:module';
import path from 'node:path';
import type { Booted } from './boot';
import type { DockerEventFeed } from './docker/feed';
import type { Backend } from './protocol/routes';
import type { TsnetDriver } from './driver/driver';
import { describeChain } from './errors';
import { installProcessGuard } from './guard';
import type { TsnetIpam } from './ipam/driver';
import type { Iproute2Kernel } from './kernel/iproute2';
import { Lifecycle } from './lifecycle';
import { log, setLogLevel } from './log';
import { routes } from './protocol/routes';
import { type CallGate, drain } from './protocol/gate';
import { createApp } from './protocol/server';
import { closeServer } from './unix-server';
import type { SqliteStore } from './store/sqlite';
import type { PrometheusTelemetry } from './telemetry/prometheus';

/** How long plugin calls in flight at SIGTERM may take to finish (dockerd gives a plugin call 30 s at most). */
const DRAIN_MS = 10_000;

/**
 * tsnet's components in start order (stop is the reverse). Start order matters to dockerd: the socket listens first,
 * at boot (src/boot.ts; dockerd gives a plugin's handshake ~10 s and a booting dockerd waits on it), then state is
 * loaded and the kernel reconciled; calls that need state or the reconciled kernel wait for that, the handshake never
 * does. What talks to Docker's API starts last: dockerd may be booting and calling tsnet meanwhile. Every room but the
 * wire (express, zod) and the log (winston) loads when its component starts. A component is one `add`; its `start`
 * returns what stops it (and what SIGHUP reloads).
 */
function components(booted: Booted): Lifecycle {
  const { config, gate } = booted;
  // Handles filled in by the components that make them, in order; a later component only uses earlier ones'.
  let store!: SqliteStore;
  /** The store as opened, for what no plugin call writes (see reclaim below). */
  let openedStore!: SqliteStore;
  let driver!: TsnetDriver;
  let ipam!: TsnetIpam;
  let kernel!: Iproute2Kernel;
  let feed!: DockerEventFeed;
  let telemetry!: PrometheusTelemetry;
  let markLoaded!: (b: Backend) => void;
  const loaded = new Promise<Backend>((resolve) => (markLoaded = resolve));
  let markReady!: () => void;
  const ready = new Promise<void>((resolve) => (markReady = resolve));

  return new Lifecycle()
    .add({
      // Taken at boot, before the socket listened; released after everything else stopped.
      name: 'state lock',
      start: () => () => booted.lock.release(),
    })
    .add({
      // Listening since boot, the handshake answered there; from here the wire serves every call. Stopped after
      // 'plugin calls' has drained the calls in flight (and after the store is closed).
      name: 'plugin socket',
      start: () => {
        booted.handler.attach(createApp(routes(), loaded, ready, gate));
        const { inherited, server } = booted;
        const address = server.address();
        if (inherited && address !== config.socket) log.warn('inherited socket is not --socket, whose name is the driver name', { socket: config.socket, inherited: address });
        log.info('tsnet listening', {
          socket: config.socket,
          stateDir: config.stateDir,
          sinceStartMs: Math.round(booted.listeningMs),
          ...(inherited ? { activated: inherited.name ?? true } : {}),
        });
        return () => closeServer(server);
      },
    })
    .add({
      name: 'kernel',
      start: async () => {
        const [{ Iproute2Kernel }, { NftFirewall }] = await Promise.all([import('./kernel/iproute2'), import('./kernel/nftables')]);
        // The firewall reads Docker's bridges from the host links (through the kernel it is part of).
        const links = () => kernel.links();
        kernel = new Iproute2Kernel(new NftFirewall(config.fwMark, config.nftTable, { links }), `tsnet:${config.nftTable}`, { sysctlRoot: config.sysctlRoot });
        return () => kernel.close();
      },
    })
    .add({
      name: 'store',
      start: async () => {
        const [{ SqliteStore }, { withFaults }] = await Promise.all([import('./store/sqlite'), import('./fault')]);
        // The test-only crash switch (src/fault.ts) counts kernel changes and commits; unset, both come back as given.
        openedStore = new SqliteStore(path.join(config.stateDir, 'tsnet.db'));
        ({ kernel, store } = withFaults(kernel, openedStore));
        return () => store.close();
      },
    })
    .add({
      name: 'state',
      start: async () => {
        const [{ TsnetIpam }, { TsnetDriver }] = await Promise.all([import('./ipam/driver'), import('./driver/driver')]);
        ipam = await TsnetIpam.load(store, {
          defaultPoolsV4: config.defaultPoolsV4,
          defaultPoolsV6: config.defaultPoolsV6,
          hostRoutes: async (v6) => (await kernel.routes(v6)).map((r) => r.dst),
        });
        // The driver takes host addresses (macvlan host shims) from tsnet's own pools.
        driver = await TsnetDriver.load(store, kernel, ipam.hostAddresses);
        // Before any plugin call: whether this start holds nothing decides first-use trust (src/reclaim/trust.ts). To
        // the store as opened, like reclaim's other trust records (no plugin call's step).
        const { promiseFirstUse } = await import('./reclaim/trust');
        await promiseFirstUse(openedStore, driver.state().networks.length === 0 && ipam.allocations().pools.length === 0);
        // Background link deletion stops after the chunk in progress; tombstones keep the rest for the next start.
        return () => driver.stop();
      },
    })
    .add({
      // Plugin calls reach the driver and IPAM from here on; at stop, the calls in flight finish before the state
      // and the store they use are closed.
      name: 'plugin calls',
      start: () => {
        markLoaded({ driver, ipam });
        return async () => {
          const cut = await drain(gate, DRAIN_MS);
          if (cut > 0) log.warn('plugin calls cut off by shutdown (dockerd retries or reports them)', { calls: cut, drainMs: DRAIN_MS });
        };
      },
    })
    .add({
      name: 'reconcile',
      start: async () => {
        const t0 = performance.now();
        await driver.reconcile();
        markReady();
        const { networks, endpoints } = driver.state();
        log.info('tsnet ready', { networks: networks.length, endpoints: endpoints.length, reconcileMs: Math.round(performance.now() - t0) });
      },
    })
    .add({
      // After reconcile, so prom-client never delays the socket or the state: what happened before is replayed from
      // the hook's early events. Its registry is what /metrics serves.
      name: 'metrics',
      start: async () => {
        const [{ attachSink }, { PrometheusTelemetry }] = await Promise.all([import('./telemetry/hook'), import('./telemetry/prometheus')]);
        const metrics = new PrometheusTelemetry({ pools: () => ipam.poolUsage() });
        telemetry = metrics;
        const detach = attachSink(metrics.sink, { replayEarly: true });
        if (!config.metricsListen) return detach;
        const { listenMetrics } = await import('./telemetry/listener');
        const listener = await listenMetrics(config.metricsListen, metrics);
        log.info('metrics listening', listener.address);
        return async () => {
          await listener.close();
          detach();
        };
      },
    })
    .add({
      // The `tsnet` CLI's socket, after the plugin's is serving (the CLI never delays dockerd) and after metrics (its
      // /metrics is theirs). Docker's API names the containers ports belong to, read only when asked.
      name: 'admin socket',
      start: async () => {
        const [{ listenAdmin }, { DockerClient }] = await Promise.all([import('./admin/server'), import('./docker/client')]);
        const docker = new DockerClient({ socketPath: config.dockerSocket });
        const containers = async () => {
          if (docker.apiVersion === undefined) await docker.negotiate();
          return docker.listContainerEndpoints();
        };
        const storeCheck = async () => {
          await openedStore.all('trust');
        };
        // Served from after reconcile until stop, so ready while it answers; stopping closes the gate first.
        const server = await listenAdmin({ driver, ipam, storeCheck, ready: () => gate.open, containers, metrics: () => telemetry.render() }, config.adminSocket);
        log.info('admin socket listening', { socket: config.adminSocket });
        return () => closeServer(server);
      },
    })
    .add({
      name: 'link watcher',
      start: async () => {
        const { LinkWatcher } = await import('./kernel/link-watch');
        return watching(new LinkWatcher(() => kernel.firewall.refreshDockerBridges()));
      },
    })
    .add({
      name: 'firewall watcher',
      start: async () => {
        const { FirewallWatcher } = await import('./kernel/firewall-watch');
        const repair = async (force: boolean) => {
          const t0 = performance.now();
          if (await driver.repairFirewall(force)) log.warn('firewall restored from the records', { table: config.nftTable, forced: force, ms: Math.round(performance.now() - t0) });
        };
        const watcher = new FirewallWatcher(config.nftTable, () => repair(false));
        watcher.start();
        // SIGHUP: the whole table again from the records (also what a cheap check cannot see, e.g. a lost element).
        return { stop: () => watcher.stop(), reload: () => repair(true) };
      },
    })
    .add({
      // Followed whether or not DNS serves: the DNS room and reclaim read it.
      name: 'docker feed',
      start: async () => {
        const { DockerEventFeed } = await import('./docker/feed');
        feed = new DockerEventFeed({ socketPath: config.dockerSocket });
        feed.start();
        return () => feed.stop();
      },
    })
    .add({
      name: 'dns',
      start: async () => {
        if (!config.dns.enabled) return;
        const [{ DnsService }, { dnsNetworks }] = await Promise.all([import('./dns/service'), import('./dns/networks')]);
        const dns = new DnsService({ config: config.dns, feed, networks: () => dnsNetworks(driver.state().networks) });
        driver.onNetworksChanged(() => dns.networksChanged());
        await dns.start();
        return { stop: () => dns.stop(), reload: () => dns.reload() };
      },
    })
    .add({
      // Its first pass is when the feed is first up (a late listener hears the current status).
      name: 'reclaim',
      start: async () => {
        const { Reclaim } = await import('./reclaim');
        // Its trust record goes to the store as opened: it is written when Docker's API is first read, at no plugin
        // call's step, so the crash switch counting it would shift every crash point by a timing accident.
        const reclaim = await Reclaim.load({ driverName: config.driverName, dockerSocket: config.dockerSocket, graceMs: config.reclaimGraceMs, feed, driver, ipam, store: openedStore });
        reclaim.start();
        return () => reclaim.stop();
      },
    });
}

/** Starts a watcher; stopping the component stops it. */
function watching(w: { start(): void; stop(): void }): () => void {
  w.start();
  return () => w.stop();
}

/**
 * SIGTERM/SIGINT: new plugin calls are refused at once, then everything stops in reverse order and tsnet exits 0
 * (1 if a stop failed). A second signal exits at once. SIGHUP reloads what can change without a restart.
 */
function handleSignals(lifecycle: Lifecycle, gate: CallGate): void {
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) {
      log.warn('second signal: exiting now', { signal });
      process.exit(1);
    }
    stopping = true;
    log.info('tsnet stopping', { signal });
    // The gate closes now, not when the server's turn to stop comes: no new call starts once tsnet is stopping.
    gate.close().catch(() => undefined);
    lifecycle.stop().then(
      (clean) => {
        log.info('tsnet stopped', { clean });
        process.exit(clean ? 0 : 1);
      },
      (err: unknown) => {
        log.error('tsnet failed to stop cleanly', { error: describeChain(err) });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => {
    log.info('SIGHUP: reloading');
    lifecycle.reload().catch((err: unknown) => log.error('SIGHUP reload failed', { error: describeChain(err) }));
  });
}

/** Runs the daemon on what boot started (src/boot.ts), until a signal stops it. */
export async function run(booted: Booted): Promise<void> {
  installProcessGuard();
  setLogLevel(booted.config.logLevel);
  const lifecycle = components(booted);
  booted.disarm();
  handleSignals(lifecycle, booted.gate);
  const t0 = performance.now();
  if (!(await lifecycle.start())) return;
  log.info('tsnet started', { ms: Math.round(performance.now() - t0) });
  // Every room is loaded now: the compile cache (src/main.ts) is written here, not only at a clean exit, which a
  // kill -9 or a crash never reaches.
  module.flushCompileCache();
}
