import net from 'node:net';
import type { FakeKernel } from '../../src/kernel/fake';
import type { SqliteStore } from '../../src/store/sqlite';
import type { PluginResponse } from '../harness/tsnet';
import { type PluginFixture, startPlugin } from './plugin-fixture';

/** The whole remote API over a real unix socket, with the kernel faked: what dockerd sees, byte for byte. */
const NID = '1'.repeat(64);
const EID = '2'.repeat(64);

let fx: PluginFixture;
let socket: string;
let store: SqliteStore;
let kernel: FakeKernel;

beforeEach(async () => {
  fx = await startPlugin();
  ({ socket, store, kernel } = fx);
});

afterEach(() => fx.close());

const call = (method: string, body: unknown = ''): Promise<PluginResponse> => fx.call(method, body);

async function snapshot(): Promise<string> {
  const all = await Promise.all((['network', 'endpoint', 'pool', 'address'] as const).map((c) => store.all(c)));
  return JSON.stringify({ all, links: [...kernel.linkMap.keys()].sort() });
}

/** A network with one joined endpoint, ready for ProgramExternalConnectivity. */
async function publishTarget(): Promise<void> {
  await createNet();
  await call('NetworkDriver.CreateEndpoint', { NetworkID: NID, EndpointID: EID, Interface: { Address: '172.28.5.2/16' } });
  await call('NetworkDriver.Join', { NetworkID: NID, EndpointID: EID, SandboxKey: '/var/run/docker/netns/x' });
}

async function createNet(): Promise<string> {
  const pool = await call('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: '172.28.0.0/16', SubPool: '172.28.5.0/24', Options: {}, V6: false });
  const poolId = (pool.body as { PoolID: string }).PoolID;
  await call('IpamDriver.RequestAddress', { PoolID: poolId, Address: '172.28.5.254', Options: { RequestAddressType: 'com.docker.network.gateway' } });
  const res = await call('NetworkDriver.CreateNetwork', {
    NetworkID: NID,
    Options: { 'com.docker.network.generic': {}, 'com.docker.network.enable_ipv6': false },
    IPv4Data: [{ AddressSpace: 'tsnet-local', Pool: '172.28.0.0/16', Gateway: '172.28.5.254/16', AuxAddresses: null }],
    IPv6Data: null,
  });
  expect(res).toMatchObject({ status: 200, body: {} });
  return poolId;
}

describe('handshake (empty bodies, no Content-Type)', () => {
  test.each([
    ['Plugin.Activate', { Implements: ['NetworkDriver', 'IpamDriver'] }],
    ['NetworkDriver.GetCapabilities', { Scope: 'local', ConnectivityScope: 'global', GwAllocChecker: false }],
    ['IpamDriver.GetCapabilities', { RequiresMACAddress: false, RequiresRequestReplay: false }],
    ['IpamDriver.GetDefaultAddressSpaces', { LocalDefaultAddressSpace: 'tsnet-local', GlobalDefaultAddressSpace: 'tsnet-global' }],
  ])('%s', async (method, expected) => {
    const res = await call(method);
    expect(res.status).toBe(200);
    expect(res.body).toEqual(expected);
  });

  test('replies carry the plugin content type', async () => {
    const res = await new Promise<string>((resolve, reject) => {
      import('node:http').then(({ request }) => {
        const req = request({ socketPath: socket, method: 'POST', path: '/Plugin.Activate' }, (r) => resolve(String(r.headers['content-type'])));
        req.on('error', reject);
        req.end();
      }, reject);
    });
    expect(res).toMatch(/application\/vnd\.docker\.plugins\.v1\+json/);
  });
});

describe('not implemented → 404 (dockerd treats it as a no-op for optional calls)', () => {
  test.each(['NetworkDriver.AllocateNetwork', 'NetworkDriver.FreeNetwork', 'NetworkDriver.GwAllocCheck', 'Foo.Bar'])(
    '%s',
    async (method) => {
      const res = await call(method, { NetworkID: NID, EndpointID: EID });
      expect(res.status).toBe(404);
      expect(res.body).toHaveProperty('Err');
    },
  );
});

describe('full sequence: network create, run, stop, rm', () => {
  test('every NetworkDriver and IpamDriver call answers as dockerd expects', async () => {
    const poolId = await createNet();
    const addr = await call('IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: {} });
    expect(addr.status).toBe(200);
    const address = (addr.body as { Address: string }).Address;
    expect(address).toMatch(/^172\.28\.5\.\d+\/16$/);

    const ep = await call('NetworkDriver.CreateEndpoint', { NetworkID: NID, EndpointID: EID, Interface: { Address: address, AddressIPv6: '', MacAddress: '' }, Options: { 'com.docker.network.endpoint.exposedports': [{ Proto: 6, Port: 80 }] } });
    expect(ep.status).toBe(200);
    expect((ep.body as { Interface: { MacAddress: string } }).Interface.MacAddress).toMatch(/^[0-9a-f:]{17}$/);
    expect(Object.keys((ep.body as { Interface: object }).Interface)).toEqual(['MacAddress']);

    const join = await call('NetworkDriver.Join', { NetworkID: NID, EndpointID: EID, SandboxKey: '/var/run/docker/netns/abc', Options: {} });
    expect(join).toMatchObject({
      status: 200,
      body: { InterfaceName: { SrcName: 'tsc222222222222', DstPrefix: 'eth' }, Gateway: '172.28.5.254', StaticRoutes: [], DisableGatewayService: false },
    });
    const info = await call('NetworkDriver.EndpointOperInfo', { NetworkID: NID, EndpointID: EID });
    expect(info).toMatchObject({ status: 200, body: { Value: { hostInterface: 'tsv222222222222', bridge: 'tsbr-1111111111' } } });

    // Publish an ephemeral port on 127.0.0.1 (tcp) and a fixed udp one on all addresses; then take them back.
    const portmap = [
      { Proto: 6, IP: '', Port: 80, HostIP: '127.0.0.1', HostPort: 0, HostPortEnd: 0 },
      { Proto: 17, IP: '', Port: 53, HostIP: '', HostPort: 0, HostPortEnd: 0 },
    ];
    const prog = await call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: NID, EndpointID: EID, Options: { 'com.docker.network.portmap': portmap } });
    expect(prog).toMatchObject({ status: 200, body: {} });
    const published = [...kernel.firewall.ports.values()];
    expect(published).toHaveLength(2);
    expect(published).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ proto: 'tcp', hostIp: '127.0.0.1', containerIp: address.split('/')[0], containerPort: 80 }),
        expect.objectContaining({ proto: 'udp', containerPort: 53 }),
      ]),
    );
    expect(((await store.all('endpoint'))[0].ports ?? []).map((p) => p.hostPort).sort()).toEqual(published.map((p) => p.hostPort).sort());
    for (let i = 0; i < 2; i++) expect((await call('NetworkDriver.RevokeExternalConnectivity', { NetworkID: NID, EndpointID: EID })).status).toBe(200);
    expect(kernel.firewall.ports.size).toBe(0);
    expect((await store.all('endpoint'))[0].ports).toBeUndefined();

    for (const m of ['NetworkDriver.DiscoverNew', 'NetworkDriver.DiscoverDelete']) {
      expect((await call(m, { DiscoveryType: 1, DiscoveryData: { Address: '10.0.0.7', self: false } })).status).toBe(200);
    }

    // Stop: Leave, DeleteEndpoint, ReleaseAddress — each twice, as dockerd replays them at boot.
    for (let i = 0; i < 2; i++) {
      expect((await call('NetworkDriver.Leave', { NetworkID: NID, EndpointID: EID })).status).toBe(200);
      expect((await call('NetworkDriver.DeleteEndpoint', { NetworkID: NID, EndpointID: EID })).status).toBe(200);
      expect((await call('IpamDriver.ReleaseAddress', { PoolID: poolId, Address: address.split('/')[0] })).status).toBe(200);
    }
    expect(kernel.linkMap.has('tsv222222222222')).toBe(false);

    for (let i = 0; i < 2; i++) {
      expect((await call('NetworkDriver.DeleteNetwork', { NetworkID: NID })).status).toBe(200);
      expect((await call('IpamDriver.ReleaseAddress', { PoolID: poolId, Address: '172.28.5.254' })).status).toBe(200);
      expect((await call('IpamDriver.ReleasePool', { PoolID: poolId })).status).toBe(200);
    }
    expect(kernel.linkMap.size).toBe(0);
    expect(await store.all('pool')).toEqual([]);
    expect(await store.all('address')).toEqual([]);
  });

  test('unknown ids on Leave/DeleteEndpoint/DeleteNetwork/Release* succeed quietly', async () => {
    for (const [m, b] of [
      ['NetworkDriver.Leave', { NetworkID: NID, EndpointID: EID }],
      ['NetworkDriver.DeleteEndpoint', { NetworkID: NID, EndpointID: EID }],
      ['NetworkDriver.DeleteNetwork', { NetworkID: NID }],
      ['IpamDriver.ReleaseAddress', { PoolID: 'tsnet-local/10.0.0.0/8', Address: '10.0.0.1' }],
      ['IpamDriver.ReleasePool', { PoolID: 'tsnet-local/10.0.0.0/8' }],
    ] as const) {
      expect(await call(m, b)).toMatchObject({ status: 200, body: {} });
    }
  });
});

describe('bad input → error status with {"Err"} naming field and value; nothing changes', () => {
  test.each<[string, unknown, RegExp]>([
    ['NetworkDriver.CreateNetwork', 'not json', /not JSON/],
    ['NetworkDriver.CreateNetwork', '[1,2]', /field "body"/],
    ['NetworkDriver.CreateNetwork', { NetworkID: 'has space' }, /field "NetworkID".*"has space"/],
    ['NetworkDriver.CreateNetwork', { NetworkID: NID, IPv4Data: [{ AddressSpace: 'x', Pool: 5 }] }, /field "IPv4Data.0.Pool".*got 5/],
    ['NetworkDriver.CreateNetwork', { NetworkID: NID, Options: { 'com.docker.network.generic': { mtu: 1500 } } }, /com\.docker\.network\.generic\.mtu.*got 1500/],
    ['NetworkDriver.CreateNetwork', { NetworkID: '3'.repeat(64), Options: { 'com.docker.network.generic': { 'com.docker.network.driver.mtu': '12' } }, IPv4Data: [] }, /mtu="12"/],
    ['NetworkDriver.CreateNetwork', { NetworkID: NID, IPv4Data: [] }, /already exists/],
    ['NetworkDriver.CreateEndpoint', { NetworkID: NID }, /field "EndpointID".*missing/],
    ['NetworkDriver.CreateEndpoint', { NetworkID: NID, EndpointID: EID, Interface: { Address: 7 } }, /Interface\.Address/],
    ['NetworkDriver.Join', { NetworkID: NID, EndpointID: EID }, /field "SandboxKey"/],
    ['NetworkDriver.Join', { NetworkID: NID, EndpointID: EID, SandboxKey: '/x' }, /EndpointID/],
    ['NetworkDriver.DiscoverNew', { DiscoveryType: 'one' }, /DiscoveryType/],
    ['IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: '10.0.0.0/33' }, /10\.0\.0\.0\/33/],
    ['IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: '', SubPool: '10.0.0.0/24' }, /SubPool/],
    ['IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: 'fd00::/64', V6: false }, /fd00::\/64/],
    ['IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: '10.0.0.0/8', V6: 'yes' }, /field "V6"/],
    ['IpamDriver.RequestAddress', { PoolID: 'tsnet-local/10.9.0.0/16', Address: '' }, /tsnet-local\/10\.9\.0\.0\/16/],
    ['IpamDriver.RequestAddress', { Address: '1.2.3.4' }, /field "PoolID"/],
    ['IpamDriver.ReleaseAddress', { PoolID: 'x' }, /field "Address"/],
  ])('%s %j', async (method, body, re) => {
    await createNet();
    const before = await snapshot();
    const res = await call(method, body);
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).not.toBe(404);
    expect((res.body as { Err: string }).Err).toMatch(re);
    expect(await snapshot()).toBe(before);
  });

  test.each<[string, unknown, RegExp]>([
    ['unknown protocol', { Proto: 99, Port: 80, HostPort: 8080 }, /Proto.*got 99/],
    ['container port 0', { Proto: 6, Port: 0, HostPort: 8080 }, /Port.*got 0/],
    ['port above 65535', { Proto: 6, Port: 80, HostPort: 70000 }, /HostPort.*got 70000/],
    ['range end below start', { Proto: 6, Port: 80, HostPort: 8080, HostPortEnd: 8000 }, /HostPortEnd.*below/],
    ['host IP not an address', { Proto: 6, Port: 80, HostIP: '1.2.3', HostPort: 8080 }, /HostIP "1\.2\.3"/],
    ['host IP not on this host', { Proto: 6, Port: 80, HostIP: '203.0.113.9', HostPort: 38080 }, /203\.0\.113\.9/],
    ['host IP with a zone', { Proto: 6, Port: 80, HostIP: 'fe80::1%eth0', HostPort: 38080 }, /fe80::1%eth0/],
    ['IPv6 loopback', { Proto: 6, Port: 80, HostIP: '::1', HostPort: 38080 }, /IPv6 loopback/],
  ])('bad port map (%s) is refused naming it; nothing published', async (_what, binding, re) => {
    await publishTarget();
    const before = await snapshot();
    const res = await call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: NID, EndpointID: EID, Options: { 'com.docker.network.portmap': [binding] } });
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect((res.body as { Err: string }).Err).toMatch(re);
    expect(kernel.firewall.ports.size).toBe(0);
    expect(await snapshot()).toBe(before);
  });

  test('a host port something else holds is refused with 409; the other ports of the call are not kept', async () => {
    await publishTarget();
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    const port = (busy.address() as net.AddressInfo).port;
    try {
      const before = await snapshot();
      const res = await call('NetworkDriver.ProgramExternalConnectivity', {
        NetworkID: NID,
        EndpointID: EID,
        Options: { 'com.docker.network.portmap': [{ Proto: 17, Port: 53, HostIP: '127.0.0.1', HostPort: port }, { Proto: 6, Port: 80, HostIP: '127.0.0.1', HostPort: port }] },
      });
      expect(res.status).toBe(409);
      expect((res.body as { Err: string }).Err).toMatch(new RegExp(`127\\.0\\.0\\.1:${port}/tcp`));
      expect(kernel.firewall.ports.size).toBe(0);
      expect(await snapshot()).toBe(before);
      // The udp port the failed call had taken first was given back.
      const again = await call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: NID, EndpointID: EID, Options: { 'com.docker.network.portmap': [{ Proto: 17, Port: 53, HostIP: '127.0.0.1', HostPort: port }] } });
      expect(again.status).toBe(200);
    } finally {
      busy.close();
    }
  });

  test('an address outside the pool is refused with its value', async () => {
    const poolId = await createNet();
    const before = await snapshot();
    const res = await call('IpamDriver.RequestAddress', { PoolID: poolId, Address: '10.1.1.1', Options: {} });
    expect(res.status).toBe(400);
    expect((res.body as { Err: string }).Err).toMatch(/10\.1\.1\.1/);
    expect(await snapshot()).toBe(before);
  });

  test('overlapping pools are refused with 409 naming both', async () => {
    await createNet();
    const res = await call('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: '172.28.128.0/17', V6: false });
    expect(res.status).toBe(409);
    expect((res.body as { Err: string }).Err).toMatch(/172\.28\.128\.0\/17.*172\.28\.0\.0\/16|172\.28\.0\.0\/16.*172\.28\.128\.0\/17/);
  });
});
