import { TsnetDriver } from '../../src/driver/driver';
import { describeChain } from '../../src/errors';
import type { FakeCall } from '../../src/kernel/fake';
import { EID, NID, NID2, expectCode, netReq, setup } from './driver-fixtures';

/**
 * Concurrent calls and crash windows. Interleavings are forced with the fake kernel's pauses; `settle` lets every
 * call that is not held run as far as it can (the fake kernel and the in-memory store do no I/O, so one macrotask
 * turn drains all their promise chains).
 */
const settle = () => new Promise<void>((r) => setImmediate(r));
const lookupOf = (name: string) => (c: FakeCall) => c.call === 'link' && c.name === name;
const linkDeletion = (c: FakeCall) => c.call === 'apply' && c.change.op === 'link.del';
const SUBNET2 = [{ addressSpace: 'tsnet-local', pool: '10.77.0.0/24', gateway: '10.77.0.1/24', auxAddresses: {} }];

describe('firewall base against network creation', () => {
  test('DeleteNetwork of the last network racing a CreateNetwork leaves the new network with its firewall', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    // CreateNetwork is held before its record exists; the old bridge's background deletion is held too.
    const lookup = kernel.pauseAt(lookupOf('tsbr-cccccccccc'));
    const reaped = kernel.pauseAt(linkDeletion);
    const created = driver.createNetwork(netReq({ networkId: NID2, ipv4: SUBNET2 }));
    await lookup.reached;
    const deleted = driver.deleteNetwork(NID);
    await settle();
    lookup.release();
    await created;
    reaped.release();
    await deleted;
    await driver.drain();
    expect((await store.all('network')).map((n) => n.id)).toEqual([NID2]);
    expect(kernel.linkMap.has('tsbr-aaaaaaaaaa')).toBe(false);
    expect(kernel.linkMap.get('tsbr-cccccccccc')).toMatchObject({ up: true });
    expect(kernel.firewall.base).toBe(true);
    expect([...kernel.firewall.networks.keys()]).toEqual(['tsbr-cccccccccc']);
  });

  test('a CreateNetwork arriving while the base removal is still queued ends with the base in place', async () => {
    const { kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    const reaped = kernel.pauseAt(linkDeletion);
    const deleted = driver.deleteNetwork(NID);
    const created = driver.createNetwork(netReq({ networkId: NID2, ipv4: SUBNET2 }));
    await deleted;
    await settle();
    reaped.release();
    await created;
    await driver.drain();
    expect(kernel.firewall.base).toBe(true);
    expect([...kernel.firewall.networks.keys()]).toEqual(['tsbr-cccccccccc']);
  });
});

describe('bridge names across networks', () => {
  test('two concurrent CreateNetwork with one bridge name: one wins, the other is TSN_NETWORK_EXISTS naming it', async () => {
    const { store, kernel, driver } = await setup();
    const opts = { 'com.docker.network.bridge.name': 'br-same' };
    // The first call is held at its look-up of the name, before anything is recorded or built.
    const lookup = kernel.pauseAt(lookupOf('br-same'));
    const first = driver.createNetwork(netReq({ driverOptions: opts }));
    await lookup.reached;
    const second = driver.createNetwork(netReq({ networkId: NID2, driverOptions: opts, ipv4: SUBNET2 }));
    await settle();
    lookup.release();
    const results = await Promise.allSettled([first, second]);
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    const loser = results.findIndex((r) => r.status === 'rejected');
    const err = await expectCode(loser === 0 ? first : second, 'TSN_NETWORK_EXISTS');
    expect(err.message).toContain('br-same');
    const winner = loser === 0 ? NID2 : NID;
    expect((await store.all('network')).map((n) => n.id)).toEqual([winner]);
    expect(kernel.linkMap.get('br-same')).toMatchObject({ owner: kernel.owner, addresses: [loser === 0 ? '10.77.0.1/24' : '172.28.5.254/16'] });

    // Deleting the winner takes the bridge with it; no other network claims it.
    await driver.deleteNetwork(winner);
    await driver.drain();
    expect(kernel.linkMap.has('br-same')).toBe(false);
    expect(await store.all('network')).toEqual([]);
    expect(kernel.firewall.base).toBe(false);
  });
});

describe('DeleteNetwork and teardown failures', () => {
  test('a kernel failure while releasing an adopted bridge never leaves a live record without its firewall', async () => {
    const { store, kernel, driver } = await setup();
    kernel.addForeignLink('br-user');
    await driver.createNetwork(netReq({ driverOptions: { 'com.docker.network.bridge.name': 'br-user' } }));
    kernel.failOn((c) => c.op === 'addr.del', 'RTNETLINK answers: Operation not permitted');
    await driver.deleteNetwork(NID);
    await driver.drain();
    expect(await store.all('network')).toEqual([]);
    expect(kernel.firewall.networks.size).toBe(0);
    expect(kernel.linkMap.has('br-user')).toBe(true);
  });

  test('a firewall failure while releasing leaves stale elements of a deleted network only, which the next start removes', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    await driver.createNetwork(netReq({ networkId: NID2, ipv4: SUBNET2 }));
    kernel.firewall.failOn('removeNetwork');
    await driver.deleteNetwork(NID);
    await driver.drain();
    expect((await store.all('network')).map((n) => n.id)).toEqual([NID2]);
    expect(kernel.linkMap.has('tsbr-aaaaaaaaaa')).toBe(false);
    await (await TsnetDriver.load(store, kernel)).reconcile();
    expect([...kernel.firewall.networks.keys()]).toEqual(['tsbr-cccccccccc']);
  });

  test('DeleteNetwork with a stale endpoint whose ports cannot be unpublished still removes both records', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    await driver.createNetwork(netReq({ networkId: NID2, ipv4: SUBNET2 }));
    await driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.2/16' }, options: {} });
    await driver.programExternalConnectivity({ networkId: NID, endpointId: EID, portBindings: [{ proto: 'sctp', port: 9, hostPort: 40011, hostPortEnd: 40011 }] });
    kernel.firewall.failOn('removePorts');
    await driver.deleteNetwork(NID);
    await driver.drain();
    expect((await store.all('network')).map((n) => n.id)).toEqual([NID2]);
    expect(await store.all('endpoint')).toEqual([]);
    expect(kernel.linkMap.has('tsvbbbbbbbbbbbb')).toBe(false);
    // The stale DNAT element belongs to no record; the next start's sync drops it.
    expect(kernel.firewall.ports.size).toBe(1);
    await driver.stop();
    await (await TsnetDriver.load(store, kernel)).reconcile();
    expect(kernel.firewall.ports.size).toBe(0);
    expect([...kernel.firewall.networks.keys()]).toEqual(['tsbr-cccccccccc']);
  });

  test.each([
    ['DeleteEndpoint', (d: TsnetDriver) => d.deleteEndpoint(NID, EID)],
    ['RevokeExternalConnectivity', (d: TsnetDriver) => d.revokeExternalConnectivity(NID, EID)],
  ])('%s: a firewall failure unpublishing ports is TSN_KERNEL with its cause, and changes nothing', async (_call, call) => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    await driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.2/16' }, options: {} });
    await driver.programExternalConnectivity({ networkId: NID, endpointId: EID, portBindings: [{ proto: 'sctp', port: 9, hostPort: 40010, hostPortEnd: 40010 }] });
    kernel.firewall.failOn('removePorts', 'nft: Operation not permitted');
    const err = await expectCode(call(driver), 'TSN_KERNEL');
    expect(describeChain(err)).toMatch(/nft: Operation not permitted/);
    expect((await store.all('network')).map((n) => n.id)).toEqual([NID]);
    expect((await store.all('endpoint'))[0]).toMatchObject({ id: EID, ports: [{ hostPort: 40010 }] });
    expect(kernel.firewall.ports.size).toBe(1);
    await driver.stop();
  });
});
