import { BRIDGE_MAX_PORTS } from '../../src/driver/bridge/endpoint';
import { vethNamesFor } from '../../src/kernel/names';
import { NID, NID2, expectCode, netReq, setup } from './driver-fixtures';

/** Distinct in the first 12 hex digits, which the veth names carry. */
const epId = (i: number) => i.toString(16).padStart(12, '0') + 'e'.repeat(52);
const ep = (networkId: string, i: number) => ({ networkId, endpointId: epId(i), iface: {}, options: {} });

describe('a bridge network holds at most 1,023 endpoints (the Linux bridge port limit)', () => {
  test('the endpoint past the limit gets an error naming the limit and the network, and changes nothing', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    await driver.createNetwork(netReq({ networkId: NID2, ipv4: [{ addressSpace: 'tsnet-local', pool: '10.77.0.0/24', gateway: '10.77.0.1/24', auxAddresses: {} }] }));
    for (let i = 0; i < BRIDGE_MAX_PORTS; i++) await driver.createEndpoint(ep(NID, i));
    const onBridge = () => [...kernel.linkMap.values()].filter((l) => l.master === 'tsbr-aaaaaaaaaa').length;
    expect(onBridge()).toBe(1023);
    const applied = kernel.applied.length;
    const links = kernel.linkMap.size;

    const err = await expectCode(driver.createEndpoint(ep(NID, BRIDGE_MAX_PORTS)), 'TSN_BRIDGE_FULL');
    expect(err.message).toContain('1023');
    expect(err.message).toContain(NID.slice(0, 12));
    expect(err.message).toContain('tsbr-aaaaaaaaaa');
    expect(kernel.applied.length).toBe(applied);
    expect(kernel.linkMap.size).toBe(links);
    expect(kernel.linkMap.has(vethNamesFor(epId(BRIDGE_MAX_PORTS)).host)).toBe(false);
    expect(await store.all('endpoint')).toHaveLength(1023);

    // The limit is per bridge, and a freed port is usable again.
    await driver.createEndpoint(ep(NID2, BRIDGE_MAX_PORTS));
    await driver.deleteEndpoint(NID, epId(0));
    await driver.drain();
    await driver.createEndpoint(ep(NID, BRIDGE_MAX_PORTS + 1));
    expect(onBridge()).toBe(1023);
  });
});
