import { TsnetDriver } from '../../src/driver/driver';
import type { CreateNetworkRequest } from '../../src/driver/contract';
import { FakeKernel } from '../../src/kernel/fake';
import { SqliteStore } from '../../src/store/sqlite';

/** What tsnet exposes that nobody published: port isolation on icc=false networks, the forwarding it turns on. */

const NID = 'e'.repeat(64);
const EID = 'f'.repeat(64);
const EID2 = '9'.repeat(64);

const subnet = (pool: string, gateway: string) => ({ addressSpace: 'tsnet-local', pool, gateway, auxAddresses: {} });
const BASE: CreateNetworkRequest = { networkId: NID, driverOptions: {}, enableIPv6: false, internal: false, ipv4: [subnet('172.29.0.0/16', '172.29.0.1/16')], ipv6: [] };
const netReq = (over: Partial<CreateNetworkRequest> = {}): CreateNetworkRequest => ({ ...BASE, ...over });

async function setup(kernel = new FakeKernel(), store = new SqliteStore(':memory:')) {
  const driver = await TsnetDriver.load(store, kernel);
  return { store, kernel, driver };
}

describe('enable_icc=false holds without br_netfilter (the bridge family keeps its ports apart)', () => {
  test('every endpoint of an icc=false network is in the firewall\'s icc=false ports, until it goes; a restart restores them', async () => {
    const store = new SqliteStore(':memory:');
    const { kernel, driver } = await setup(new FakeKernel(), store);
    await driver.createNetwork(netReq({ driverOptions: { 'com.docker.network.bridge.enable_icc': 'false' } }));
    for (const [id, addr] of [[EID, '172.29.0.2/16'], [EID2, '172.29.0.3/16']] as const) {
      await driver.createEndpoint({ networkId: NID, endpointId: id, iface: { address: addr }, options: {} });
    }
    const hostIfs = driver.state().endpoints.flatMap((e) => (e.mode === 'bridge' ? [e.hostIf] : [])).sort();
    expect(hostIfs).toHaveLength(2);
    expect([...kernel.firewall.noIccPorts].sort()).toEqual(hostIfs);

    const restarted = new FakeKernel();
    await (await TsnetDriver.load(store, restarted)).reconcile();
    expect([...restarted.firewall.noIccPorts].sort()).toEqual(hostIfs);

    await driver.deleteEndpoint(NID, EID);
    expect([...kernel.firewall.noIccPorts]).toEqual(driver.state().endpoints.flatMap((e) => (e.mode === 'bridge' ? [e.hostIf] : [])));
    await driver.deleteNetwork(NID);
    expect(kernel.firewall.noIccPorts.size).toBe(0);
  });

  test('on an icc=true network no port is kept apart', async () => {
    const { kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    await driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.29.0.2/16' }, options: {} });
    expect(kernel.firewall.noIccPorts.size).toBe(0);
  });
});

describe('forwarding tsnet turns on is guarded (the host does not become an open router)', () => {
  const V4 = 'net/ipv4/ip_forward';
  const V6 = 'net/ipv6/conf/all/forwarding';

  function kernelWith(sysctls: Record<string, string>): FakeKernel {
    const k = new FakeKernel();
    for (const [key, v] of Object.entries(sysctls)) k.sysctls.set(key, v);
    return k;
  }

  test('forwarding off before: tsnet records that it turned it on and guards the family before writing it', async () => {
    const { kernel, driver, store } = await setup(kernelWith({ [V4]: '0', [V6]: '0' }));
    await driver.createNetwork(netReq());
    expect(kernel.sysctls.get(V4)).toBe('1');
    expect([...kernel.firewall.guard]).toEqual(['ipv4']);
    expect((await store.all('host')).map((r) => r.key)).toEqual([V4]);
    // The guard is in the table before forwarding goes on (no window of an open router).
    expect(kernel.firewall.calls.indexOf('setForwardGuard ipv4')).toBeLessThan(kernel.firewall.calls.indexOf(`addNetwork tsbr-eeeeeeeeee`));
    expect(kernel.sysctls.get(V6)).toBe('0');
  });

  test('IPv6 networks guard IPv6 forwarding when tsnet turns it on', async () => {
    const { kernel, driver, store } = await setup(kernelWith({ [V4]: '1', [V6]: '0' }));
    await driver.createNetwork(netReq({ enableIPv6: true, ipv6: [subnet('fd00:29::/64', 'fd00:29::1/64')] }));
    expect(kernel.sysctls.get(V6)).toBe('1');
    expect([...kernel.firewall.guard]).toEqual(['ipv6']);
    expect((await store.all('host')).map((r) => r.key)).toEqual([V6]);
  });

  test('forwarding someone else turned on is not tsnet\'s to guard; internal networks claim nothing', async () => {
    const { kernel, driver, store } = await setup(kernelWith({ [V4]: '1' }));
    await driver.createNetwork(netReq());
    await driver.createNetwork(netReq({ networkId: '8'.repeat(64), internal: true, ipv4: [subnet('172.27.0.0/16', '172.27.0.1/16')] }));
    expect(kernel.firewall.guard.size).toBe(0);
    expect(await store.all('host')).toEqual([]);
    await driver.deleteNetwork(NID);
    await driver.deleteNetwork('8'.repeat(64));
    await driver.drain();
    expect(kernel.firewall.base).toBe(false);
  });

  test('an internal network does not turn forwarding on', async () => {
    const { kernel, driver, store } = await setup(kernelWith({ [V4]: '0' }));
    await driver.createNetwork(netReq({ internal: true }));
    expect(kernel.sysctls.get(V4)).toBe('0');
    expect(await store.all('host')).toEqual([]);
  });

  test('the guard outlives the last network, and a restart (forwarding now 1, set by tsnet) still knows it is tsnet\'s', async () => {
    const store = new SqliteStore(':memory:');
    const kernel = kernelWith({ [V4]: '0' });
    const { driver } = await setup(kernel, store);
    await driver.createNetwork(netReq());
    await driver.deleteNetwork(NID);
    await driver.drain();
    expect(kernel.firewall.calls).not.toContain('removeBase');
    expect(kernel.firewall.base).toBe(true);
    expect(kernel.firewall.networks.size).toBe(0);

    const restarted = new FakeKernel();
    restarted.sysctls.set(V4, '1');
    const again = await TsnetDriver.load(store, restarted);
    await again.reconcile();
    expect([...restarted.firewall.guard]).toEqual(['ipv4']);
    expect(restarted.firewall.calls).toContain('sync');
    expect(restarted.firewall.calls).not.toContain('removeBase');
  });
});
