import { TsnetDriver } from '../../src/driver/driver';
import type { CreateNetworkRequest } from '../../src/driver/contract';
import { FakeKernel } from '../../src/kernel/fake';
import { SqliteStore } from '../../src/store/sqlite';

/** What tsnet exposes that nobody published: port isolation on icc=false networks, the forwarding it turns on. */

const NID = 'e'.repeat(64);
const EID = 'f'.repeat(64);
const EID2 = '9'.repeat(64);

function netReq(over: Partial<CreateNetworkRequest> = {}): CreateNetworkRequest {
  return {
    networkId: NID,
    driverOptions: {},
    enableIPv6: false,
    internal: false,
    ipv4: [{ addressSpace: 'tsnet-local', pool: '172.29.0.0/16', gateway: '172.29.0.1/16', auxAddresses: {} }],
    ipv6: [],
    ...over,
  };
}

async function setup(kernel = new FakeKernel(), store = new SqliteStore(':memory:')) {
  const driver = await TsnetDriver.load(store, kernel);
  return { store, kernel, driver };
}

describe('enable_icc=false is enforced by bridge port isolation (no br_netfilter needed)', () => {
  test('every endpoint of an icc=false network is an isolated bridge port, after it is on the bridge', async () => {
    const { kernel, driver } = await setup();
    await driver.createNetwork(netReq({ driverOptions: { 'com.docker.network.bridge.enable_icc': 'false' } }));
    for (const [id, addr] of [[EID, '172.29.0.2/16'], [EID2, '172.29.0.3/16']] as const) {
      await driver.createEndpoint({ networkId: NID, endpointId: id, iface: { address: addr }, options: {} });
    }
    const { endpoints } = driver.state();
    expect(endpoints).toHaveLength(2);
    for (const ep of endpoints) {
      expect(kernel.linkMap.get(ep.hostIf)).toMatchObject({ master: 'tsbr-eeeeeeeeee', isolated: true });
      const ops = kernel.applied.filter((c) => 'name' in c && c.name === ep.hostIf).map((c) => c.op);
      expect(ops.indexOf('link.isolate')).toBeGreaterThan(ops.indexOf('link.master'));
    }
  });

  test('on an icc=true network ports are not isolated', async () => {
    const { kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    await driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.29.0.2/16' }, options: {} });
    expect(kernel.applied.some((c) => c.op === 'link.isolate')).toBe(false);
    expect(kernel.linkMap.get(driver.state().endpoints[0]!.hostIf)?.isolated).toBeUndefined();
  });
});
