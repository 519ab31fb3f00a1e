import http from 'node:http';
import type { CollectionName } from '../../src/store/records';
import { pluginCall, type PluginResponse } from '../harness/tsnet';
import { type PluginFixture, startPlugin } from '../unit/plugin-fixture';

/** Every store collection; a Record so that a new collection is a compile error here until it is snapshotted. */
const COLLECTIONS: Record<CollectionName, true> = { tombstone: true, network: true, endpoint: true, pool: true, address: true, host: true, parent: true, trust: true };

/** Ids of the state every fuzzed method starts from: a pool, a network, a joined endpoint (see {@link FuzzApp.seed}). */
export const BASE = {
  networkId: 'f'.repeat(64),
  endpointId: 'e'.repeat(64),
  pool: '172.29.0.0/16',
  subPool: '172.29.5.0/24',
  gateway: '172.29.5.254',
  endpointAddress: '172.29.5.2/16',
  sandboxKey: '/var/run/docker/netns/fuzz',
};

/**
 * The child-link state seeded besides: host NIC eth1 (the fake's), a macvlan network on the VLAN eth1.10 tsnet
 * makes, with a host shim whose address comes from tsnet's pool, a joined endpoint whose link dockerd moved and an
 * endpoint not joined yet.
 */
export const CHILD = {
  nic: 'eth1',
  parent: 'eth1.10',
  networkId: '9'.repeat(64),
  endpointId: '8'.repeat(64),
  /** An endpoint created but not joined, so a fuzzed Join can make its link. */
  spareEndpointId: '7'.repeat(64),
  pool: '172.30.0.0/24',
  gateway: '172.30.0.1',
  endpointAddress: '172.30.0.3/24',
  /** The endpoint's link in the host namespace (childNameFor). */
  link: `tsm${'8'.repeat(12)}`,
};

/**
 * The whole plugin (routes, driver, IPAM) over SqliteStore(':memory:') and the recording FakeKernel on a real unix
 * socket in a temp dir (test/unit/plugin-fixture.ts): what dockerd talks to, minus the kernel. One keep-alive
 * connection keeps per-call cost low.
 */
export class FuzzApp {
  poolId = '';
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  private constructor(private readonly plugin: PluginFixture) {}

  static async start(): Promise<FuzzApp> {
    const app = new FuzzApp(await startPlugin());
    await app.seed();
    return app;
  }

  /** POSTs the raw body text; rejects only if the server does not answer (a socket error or a dead server). */
  call(method: string, body: string): Promise<PluginResponse> {
    return pluginCall(this.plugin.socket, method, body, 10_000, this.agent);
  }

  /** A pool with a gateway, a network on it with ports published on loopback only, and a joined endpoint. */
  private async seed(): Promise<void> {
    const ok = async (method: string, body: unknown): Promise<unknown> => {
      const r = await this.call(method, JSON.stringify(body));
      if (r.status !== 200) throw new Error(`fuzz seed: ${method} answered ${r.status} ${r.raw}`);
      return r.body;
    };
    const pool = (await ok('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: BASE.pool, SubPool: BASE.subPool, Options: {}, V6: false })) as { PoolID: string };
    this.poolId = pool.PoolID;
    await ok('IpamDriver.RequestAddress', { PoolID: this.poolId, Address: BASE.gateway, Options: { RequestAddressType: 'com.docker.network.gateway' } });
    await ok('NetworkDriver.CreateNetwork', {
      NetworkID: BASE.networkId,
      // Published ports without a HostIP bind loopback only: the fuzz never opens a port to the LAN.
      Options: { 'com.docker.network.generic': { 'com.docker.network.bridge.host_binding_ipv4': '127.0.0.1' }, 'com.docker.network.enable_ipv6': false },
      IPv4Data: [{ AddressSpace: 'tsnet-local', Pool: BASE.pool, Gateway: `${BASE.gateway}/16`, AuxAddresses: null }],
      IPv6Data: null,
    });
    await ok('NetworkDriver.CreateEndpoint', { NetworkID: BASE.networkId, EndpointID: BASE.endpointId, Interface: { Address: BASE.endpointAddress } });
    await ok('NetworkDriver.Join', { NetworkID: BASE.networkId, EndpointID: BASE.endpointId, SandboxKey: BASE.sandboxKey });
    await this.seedChild(ok);
  }

  private async seedChild(ok: (method: string, body: unknown) => Promise<unknown>): Promise<void> {
    this.plugin.kernel.addForeignLink(CHILD.nic, '');
    const pool = (await ok('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: CHILD.pool, SubPool: '', Options: {}, V6: false })) as { PoolID: string };
    await ok('IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: CHILD.gateway, Options: { RequestAddressType: 'com.docker.network.gateway' } });
    await ok('NetworkDriver.CreateNetwork', {
      NetworkID: CHILD.networkId,
      Options: { 'com.docker.network.generic': { mode: 'macvlan', parent: CHILD.parent, 'tsnet.host_shim': 'true' } },
      IPv4Data: [{ AddressSpace: 'tsnet-local', Pool: CHILD.pool, Gateway: `${CHILD.gateway}/24`, AuxAddresses: null }],
      IPv6Data: null,
    });
    await ok('NetworkDriver.CreateEndpoint', { NetworkID: CHILD.networkId, EndpointID: CHILD.endpointId, Interface: { Address: CHILD.endpointAddress } });
    await ok('NetworkDriver.Join', { NetworkID: CHILD.networkId, EndpointID: CHILD.endpointId, SandboxKey: BASE.sandboxKey });
    // What dockerd does after Join: the link goes into the sandbox.
    this.plugin.kernel.linkMap.delete(CHILD.link);
    await ok('NetworkDriver.CreateEndpoint', { NetworkID: CHILD.networkId, EndpointID: CHILD.spareEndpointId, Interface: { Address: '172.30.0.250/24' } });
  }

  /** Everything a call could change: every store collection, the driver's memory, the fake kernel's links, sysctls and firewall. */
  async snapshot(): Promise<string> {
    const collections = await Promise.all((Object.keys(COLLECTIONS) as CollectionName[]).map((c) => this.plugin.store.all(c)));
    const { kernel, driver } = this.plugin;
    const fw = kernel.firewall;
    const sorted = <V>(m: Map<string, V>) => [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return JSON.stringify({
      collections,
      driver: driver.state(),
      links: sorted(kernel.linkMap),
      sysctls: sorted(kernel.sysctls),
      routes: kernel.routeTable,
      firewall: { base: fw.base, networks: sorted(fw.networks), ports: sorted(fw.ports) },
    });
  }

  async stop(): Promise<void> {
    this.agent.destroy();
    await this.plugin.close();
  }
}
