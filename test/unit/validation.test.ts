import { TsnetIpam } from '../../src/ipam/driver';
import type { FakeKernel } from '../../src/kernel/fake';
import { SqliteStore } from '../../src/store/sqlite';
import type { PluginResponse } from '../harness/tsnet';
import { type PluginFixture, startPlugin } from './plugin-fixture';

/**
 * Nothing a caller sends reaches the kernel unparsed: every address and CIDR of CreateNetwork and CreateEndpoint is
 * parsed at the edge, related to its pool, and refused with 400 naming the field and the value; nothing changes.
 */
const NID = '1'.repeat(64);
const NID2 = '3'.repeat(64);
const EID = '2'.repeat(64);

let fx: PluginFixture;
let store: SqliteStore;
let kernel: FakeKernel;

beforeEach(async () => {
  fx = await startPlugin();
  ({ store, kernel } = fx);
});

afterEach(() => fx.close());

const call = (method: string, body: unknown = ''): Promise<PluginResponse> => fx.call(method, body);

/** Store, links, every kernel change and firewall call so far. */
async function snapshot(): Promise<string> {
  const all = await Promise.all((['network', 'endpoint', 'pool', 'address'] as const).map((c) => store.all(c)));
  return JSON.stringify({ all, links: [...kernel.linkMap.values()], applied: kernel.applied, fw: kernel.firewall.calls });
}

/** The value as it appears in an error message (JSON-escaped, e.g. a newline as \n), cut to a stable prefix. */
const shown = (value: string) => JSON.stringify(value).slice(1, -1).slice(0, 40);

async function expectRefused(method: string, body: unknown, field: string, value: string): Promise<void> {
  const before = await snapshot();
  const res = await call(method, body);
  expect(res.status).toBe(400);
  const err = (res.body as { Err: string }).Err;
  expect(err).toContain(field);
  expect(err).toContain(shown(value));
  expect(await snapshot()).toBe(before);
}

type Data = { Pool: string; Gateway?: string; AuxAddresses?: Record<string, string> | null };
const v4 = (over: Partial<Data> = {}): Data => ({ Pool: '172.28.0.0/16', Gateway: '172.28.5.254/16', AuxAddresses: null, ...over });
const v6 = (over: Partial<Data> = {}): Data => ({ Pool: 'fd00:1::/64', Gateway: 'fd00:1::1/64', AuxAddresses: null, ...over });

function createNetworkBody(ipv4: Data[], ipv6: Data[] = [], generic: Record<string, string> = {}, id = NID) {
  return {
    NetworkID: id,
    Options: { 'com.docker.network.generic': generic, 'com.docker.network.enable_ipv6': ipv6.length > 0 },
    IPv4Data: ipv4.map((d) => ({ AddressSpace: 'tsnet-local', ...d })),
    IPv6Data: ipv6.map((d) => ({ AddressSpace: 'tsnet-local', ...d })),
  };
}

const INJECTION = '172.28.5.254/16 dev lo\nnetns add x\nnetns exec x /bin/sh -c id';

describe('CreateNetwork: IPv4Data/IPv6Data are parsed and related to their pools', () => {
  test.each<[string, Data[], Data[], string, string]>([
    ['gateway carrying extra ip -batch commands', [v4({ Gateway: INJECTION })], [], 'IPv4Data.0.Gateway', INJECTION],
    ['pool that is no CIDR', [v4({ Pool: 'not-a-cidr' })], [], 'IPv4Data.0.Pool', 'not-a-cidr'],
    ['pool with trailing junk', [v4({ Pool: '172.28.0.0/16 x' })], [], 'IPv4Data.0.Pool', '172.28.0.0/16 x'],
    ['gateway outside its pool', [v4({ Gateway: '10.1.0.1/16' })], [], 'IPv4Data.0.Gateway', '10.1.0.1/16'],
    ['gateway with another prefix', [v4({ Gateway: '172.28.5.254/24' })], [], 'IPv4Data.0.Gateway', '172.28.5.254/24'],
    ['gateway with a prefix too long', [v4({ Gateway: '172.28.5.254/99' })], [], 'IPv4Data.0.Gateway', '172.28.5.254/99'],
    ['IPv4 gateway in IPv6Data', [v4()], [v6({ Gateway: '172.28.5.254/16' })], 'IPv6Data.0.Gateway', '172.28.5.254/16'],
    ['IPv4 pool in IPv6Data', [v4()], [v6({ Pool: '10.9.0.0/16', Gateway: '10.9.0.1/16' })], 'IPv6Data.0.Pool', '10.9.0.0/16'],
    ['IPv6 pool in IPv4Data', [v6()], [], 'IPv4Data.0.Pool', 'fd00:1::/64'],
    ['IPv4-mapped gateway in IPv6Data', [v4()], [v6({ Gateway: '::ffff:172.28.5.1/64' })], 'IPv6Data.0.Gateway', '::ffff:172.28.5.1/64'],
    ['IPv4-mapped gateway in IPv4Data', [v4({ Gateway: '::ffff:172.28.5.254/112' })], [], 'IPv4Data.0.Gateway', '::ffff:172.28.5.254/112'],
    ['aux address outside the pool', [v4({ AuxAddresses: { r: '10.1.0.1/16' } })], [], 'IPv4Data.0.AuxAddresses.r', '10.1.0.1/16'],
    ['aux address that is no address', [v4({ AuxAddresses: { r: '172.28.5.1/16;x' } })], [], 'IPv4Data.0.AuxAddresses.r', '172.28.5.1/16;x'],
  ])('%s', async (_what, ipv4, ipv6, field, value) => {
    await expectRefused('NetworkDriver.CreateNetwork', createNetworkBody(ipv4, ipv6), field, value);
  });

  test.each<[string, string, boolean]>([
    ['0.0.0.0/0', '0.0.0.0/8', false],
    ['0.1.0.0/16', '0.0.0.0/8', false],
    ['127.0.0.0/8', '127.0.0.0/8', false],
    ['127.1.0.0/16', '127.0.0.0/8', false],
    ['169.254.0.0/16', '169.254.0.0/16', false],
    ['224.0.0.0/24', '224.0.0.0/4', false],
    ['239.255.0.0/16', '224.0.0.0/4', false],
    ['255.255.255.255/32', '255.255.255.255/32', false],
    ['::/0', '::/8', true],
    ['::1/128', '::/8', true],
    ['::/64', '::/8', true],
    ['::ffff:0:0/95', '::/8', true],
    ['fe80::/64', 'fe80::/10', true],
    ['ff02::/16', 'ff00::/8', true],
  ])('pool %s overlaps the special-use range %s: refused naming the pool', async (pool, range, isV6) => {
    const data = { Pool: pool, AuxAddresses: null };
    const body = isV6 ? createNetworkBody([v4()], [data]) : createNetworkBody([data]);
    await expectRefused('NetworkDriver.CreateNetwork', body, `IPv${isV6 ? 6 : 4}Data.0.Pool`, pool);
    expect((await call('NetworkDriver.CreateNetwork', body)).body).toEqual({ Err: expect.stringContaining(range) });
  });

  test.each(['all', 'default', 'lo'])('bridge name %j is refused naming the option', async (name) => {
    const body = createNetworkBody([v4()], [], { 'com.docker.network.bridge.name': name });
    await expectRefused('NetworkDriver.CreateNetwork', body, 'com.docker.network.bridge.name', name);
  });

  test('what reaches the store and the kernel is canonical text', async () => {
    const res = await call(
      'NetworkDriver.CreateNetwork',
      createNetworkBody(
        [v4({ Pool: '172.28.9.9/16', AuxAddresses: { r: '172.28.5.1/16' } })],
        [{ Pool: 'FD00:1:0:0::7/64', Gateway: 'FD00:1:0::1/64', AuxAddresses: { x: 'fd00:1:0:0:0:0:0:2/64' } }],
      ),
    );
    expect(res).toMatchObject({ status: 200, body: {} });
    const [net] = await store.all('network');
    expect(net).toMatchObject({
      ipv4: [{ pool: '172.28.0.0/16', gateway: '172.28.5.254/16', auxAddresses: { r: '172.28.5.1/16' } }],
      ipv6: [{ pool: 'fd00:1::/64', gateway: 'fd00:1::1/64', auxAddresses: { x: 'fd00:1::2/64' } }],
      bridgeAddresses: ['172.28.5.254/16', 'fd00:1::1/64'],
    });
  });

  test('an empty Gateway means none, as dockerd sends it when IPAM gave none', async () => {
    const res = await call('NetworkDriver.CreateNetwork', createNetworkBody([v4({ Gateway: '' })]));
    expect(res).toMatchObject({ status: 200, body: {} });
    expect((await store.all('network'))[0]).toMatchObject({ ipv4: [{ pool: '172.28.0.0/16' }], bridgeAddresses: [] });
  });
});

describe('CreateEndpoint: interface addresses are parsed and must sit on a subnet of the network', () => {
  beforeEach(async () => {
    expect((await call('NetworkDriver.CreateNetwork', createNetworkBody([v4()], [v6()]))).status).toBe(200);
  });

  const ep = (iface: Record<string, string>) => ({ NetworkID: NID, EndpointID: EID, Interface: iface, Options: {} });

  test.each<[string, Record<string, string>, string, string]>([
    ['prefix longer than the family allows', { Address: '172.28.5.2/99' }, 'Interface.Address', '172.28.5.2/99'],
    ['junk after the prefix', { Address: '172.28.5.2/16 garbage' }, 'Interface.Address', '172.28.5.2/16 garbage'],
    ['extra ip -batch commands', { Address: '172.28.5.2/16\nlink del dev eth0' }, 'Interface.Address', '172.28.5.2/16\nlink del dev eth0'],
    ['no prefix', { Address: '172.28.5.2' }, 'Interface.Address', '172.28.5.2'],
    ['IPv4-mapped IPv6 as Address', { Address: '::ffff:172.28.5.2/112' }, 'Interface.Address', '::ffff:172.28.5.2/112'],
    [
      'IPv4-mapped IPv6 as AddressIPv6',
      { Address: '172.28.5.2/16', AddressIPv6: '::ffff:172.28.5.2/64' },
      'Interface.AddressIPv6',
      '::ffff:172.28.5.2/64',
    ],
    ['IPv4 address as AddressIPv6', { AddressIPv6: '172.28.5.3/16' }, 'Interface.AddressIPv6', '172.28.5.3/16'],
    ['IPv6 address as Address', { Address: 'fd00:1::3/64' }, 'Interface.Address', 'fd00:1::3/64'],
    ['address outside every subnet', { Address: '10.9.0.2/16' }, 'Interface.Address', '10.9.0.2/16'],
    ['address in the subnet with another prefix', { Address: '172.28.5.2/24' }, 'Interface.Address', '172.28.5.2/24'],
    ['IPv6 address with another prefix', { AddressIPv6: 'fd00:1::2/80' }, 'Interface.AddressIPv6', 'fd00:1::2/80'],
    [
      'MAC carrying extra commands',
      { Address: '172.28.5.2/16', MacAddress: '02:42:ac:1c:05:02\nlink del dev lo' },
      'Interface.MacAddress',
      '02:42:ac:1c:05:02\nlink del dev lo',
    ],
  ])('%s', async (_what, iface, field, value) => {
    await expectRefused('NetworkDriver.CreateEndpoint', ep(iface), field, value);
  });

  test('addresses are stored canonically and the MAC follows the IPv4 address', async () => {
    const res = await call('NetworkDriver.CreateEndpoint', ep({ Address: '172.28.5.2/16', AddressIPv6: 'FD00:1:0::2/64' }));
    expect(res).toMatchObject({ status: 200, body: { Interface: { MacAddress: '02:42:ac:1c:05:02' } } });
    expect((await store.all('endpoint'))[0]).toMatchObject({ address: '172.28.5.2/16', addressIPv6: 'fd00:1::2/64' });
  });
});

describe('records from before the edge parsed pools', () => {
  test('a network whose stored pool does not parse refuses endpoint addresses as on no subnet (400, not a store error)', async () => {
    // Straight to the driver, as a network created by an older tsnet would have been stored.
    await fx.driver.createNetwork({
      networkId: NID,
      driverOptions: {},
      enableIPv6: false,
      internal: false,
      ipv4: [{ addressSpace: 'tsnet-local', pool: 'not-a-cidr', auxAddresses: {} }],
      ipv6: [],
    });
    const before = await snapshot();
    const res = await call('NetworkDriver.CreateEndpoint', { NetworkID: NID, EndpointID: EID, Interface: { Address: '172.28.5.2/16' } });
    expect(res).toMatchObject({ status: 400, body: { Err: expect.stringContaining('Interface.Address "172.28.5.2/16"') } });
    expect(await snapshot()).toBe(before);
  });
});

describe('IPAM refuses special-use pools, naming the pool', () => {
  test.each(['127.0.0.0/8', '0.0.0.0/0', '169.254.1.0/24', '224.0.0.0/4', '255.255.255.255/32'])('RequestPool %s', async (pool) => {
    await expectRefused('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: pool, V6: false }, 'Pool', pool);
  });

  test.each(['::/0', '::1/128', 'fe80::/64', 'ff00::/8', '::ffff:0:0/95'])('RequestPool (V6) %s', async (pool) => {
    await expectRefused('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: pool, V6: true }, 'Pool', pool);
  });

  test('a SubPool is inside its pool, so a special-use pool is refused before it', async () => {
    await expectRefused(
      'IpamDriver.RequestPool',
      { AddressSpace: 'tsnet-local', Pool: '127.0.0.0/8', SubPool: '127.0.0.0/24', V6: false },
      'Pool',
      '127.0.0.0/8',
    );
  });

  test.each<[string, { base: string; size: number }, boolean]>([
    ['IPv4 loopback', { base: '127.0.0.0/8', size: 16 }, false],
    ['IPv4 default route', { base: '0.0.0.0/0', size: 16 }, false],
    ['IPv6 link-local', { base: 'fe80::/10', size: 64 }, true],
  ])('--default-address-pool covering %s is refused at start naming the base', async (_what, spec, isV6) => {
    const opts = { defaultPoolsV4: isV6 ? [] : [spec], defaultPoolsV6: isV6 ? [spec] : [], hostRoutes: () => Promise.resolve([]) };
    await expect(TsnetIpam.load(new SqliteStore(':memory:'), opts)).rejects.toThrow(
      expect.objectContaining({ code: 'TSN_INVALID_OPTION', message: expect.stringContaining(`"${spec.base}"`) }),
    );
  });

  test('a second network with a valid pool still works after the refusals', async () => {
    await call('NetworkDriver.CreateNetwork', createNetworkBody([{ Pool: '127.0.0.0/8' }], [], {}, NID2));
    expect((await call('NetworkDriver.CreateNetwork', createNetworkBody([v4()], [], {}, NID2))).status).toBe(200);
  });
});

describe('strings a caller sends are bounded at the edge, so no reply or log line carries them whole', () => {
  const HUGE = 'x'.repeat(100_000);
  test.each<[string, string, unknown]>([
    ['RequestPool AddressSpace', 'IpamDriver.RequestPool', { AddressSpace: HUGE, Pool: '172.28.0.0/16' }],
    ['RequestPool Options value', 'IpamDriver.RequestPool', { Pool: '172.28.0.0/16', Options: { 'com.docker.network.ipam.serial': HUGE } }],
    ['RequestAddress PoolID', 'IpamDriver.RequestAddress', { PoolID: HUGE }],
    ['ReleaseAddress Address', 'IpamDriver.ReleaseAddress', { PoolID: 'tsnet-local/172.28.0.0/16', Address: HUGE }],
    ['CreateNetwork option name', 'NetworkDriver.CreateNetwork', createNetworkBody([v4()], [], { [HUGE]: '1' })],
    ['CreateNetwork option value', 'NetworkDriver.CreateNetwork', createNetworkBody([v4()], [], { 'com.docker.network.bridge.name': HUGE })],
    ['Join SandboxKey', 'NetworkDriver.Join', { NetworkID: NID, EndpointID: EID, SandboxKey: HUGE }],
  ])('%s of 100,000 characters: 400 with a short Err, nothing changed', async (_what, method, body) => {
    const before = await snapshot();
    const res = await call(method, body);
    expect(res.status).toBe(400);
    const err = (res.body as { Err: string }).Err;
    expect(err.length).toBeLessThan(1_000);
    expect(await snapshot()).toBe(before);
  });
});
