import { TsnetDriver } from '../../src/driver/driver';
import { FakeKernel } from '../../src/kernel/fake';
import { SqliteStore } from '../../src/store/sqlite';
import { EID, EID2, NID, NID2, expectCode, netReq, setup } from './driver-fixtures';

describe('bridge network lifecycle', () => {
  test('CreateNetwork builds a bridge with the gateway, fixed MAC, IPv6 off, firewall allow; persisted', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    const br = kernel.linkMap.get('tsbr-aaaaaaaaaa');
    expect(br).toMatchObject({ kind: 'bridge', up: true, addresses: ['172.28.5.254/16'] });
    expect(br?.mac).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    expect(kernel.sysctls.get('net/ipv6/conf/tsbr-aaaaaaaaaa/disable_ipv6')).toBe('1');
    expect(kernel.firewall.networks.has('tsbr-aaaaaaaaaa')).toBe(true);
    const nets = await store.all('network');
    expect(nets).toHaveLength(1);
    expect(nets[0]).toMatchObject({ id: NID, bridge: 'tsbr-aaaaaaaaaa', ownsBridge: true, bridgeAddresses: ['172.28.5.254/16'] });
  });

  test('options: bridge name and MTU are applied; several subnets put every gateway on the bridge', async () => {
    const { kernel, driver } = await setup();
    await driver.createNetwork(
      netReq({
        driverOptions: { 'com.docker.network.bridge.name': 'br-test0', 'com.docker.network.driver.mtu': '1400' },
        ipv4: [
          { addressSpace: 'tsnet-local', pool: '10.10.0.0/24', gateway: '10.10.0.1/24', auxAddresses: {} },
          { addressSpace: 'tsnet-local', pool: '10.20.0.0/24', gateway: '10.20.0.1/24', auxAddresses: {} },
        ],
      }),
    );
    expect(kernel.linkMap.get('br-test0')).toMatchObject({ mtu: 1400, addresses: ['10.10.0.1/24', '10.20.0.1/24'] });
  });

  test('IPv6: gateway on the bridge, RAs off, Join returns both gateways', async () => {
    const { kernel, driver } = await setup();
    await driver.createNetwork(
      netReq({ enableIPv6: true, ipv6: [{ addressSpace: 'tsnet-local', pool: 'fd00:1::/64', gateway: 'fd00:1::1/64', auxAddresses: {} }] }),
    );
    expect(kernel.linkMap.get('tsbr-aaaaaaaaaa')?.addresses).toEqual(['172.28.5.254/16', 'fd00:1::1/64']);
    expect(kernel.sysctls.get('net/ipv6/conf/tsbr-aaaaaaaaaa/accept_ra')).toBe('0');
    await driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.2/16', addressIPv6: 'fd00:1::2/64' }, options: {} });
    const j = await driver.join({ networkId: NID, endpointId: EID, sandboxKey: '/var/run/docker/netns/x', options: {} });
    expect(j).toEqual({ srcName: 'tscbbbbbbbbbbbb', dstPrefix: 'eth', gateway: '172.28.5.254', gatewayIPv6: 'fd00:1::1', staticRoutes: [], disableGatewayService: false });
  });

  test.each([
    [{ foo: 'bar' }, /unknown option "foo"/],
    [{ 'com.docker.network.driver.mtu': '99999' }, /mtu="99999"/],
    [{ 'com.docker.network.driver.mtu': 'abc' }, /mtu="abc"/],
    [{ 'com.docker.network.bridge.name': 'bad name;rm' }, /bridge.name "bad name;rm"/],
    [{ 'com.docker.network.bridge.name': 'waytoolongname123' }, /waytoolongname123/],
    [{ 'com.docker.network.bridge.enable_icc': 'maybe' }, /enable_icc="maybe"/],
    [{ 'com.docker.network.bridge.host_binding_ipv4': '1.2.3' }, /host_binding_ipv4="1.2.3"/],
    [{ mode: 'vxlan' }, /mode="vxlan"/],
  ])('bad option %j is refused naming it and changes nothing', async (opts, re) => {
    const { store, kernel, driver } = await setup();
    const err = await expectCode(driver.createNetwork(netReq({ driverOptions: opts })), 'TSN_INVALID_OPTION');
    expect(err.message).toMatch(re);
    expect(kernel.applied).toEqual([]);
    expect(await store.all('network')).toEqual([]);
  });

  test('a bridge name used by another tsnet network is refused', async () => {
    const { driver } = await setup();
    await driver.createNetwork(netReq({ driverOptions: { 'com.docker.network.bridge.name': 'br-x' } }));
    await expectCode(driver.createNetwork(netReq({ networkId: NID2, driverOptions: { 'com.docker.network.bridge.name': 'br-x' } })), 'TSN_NETWORK_EXISTS');
  });

  test('an existing bridge is adopted: only the addresses tsnet added are removed, never the bridge', async () => {
    const { kernel, driver } = await setup();
    kernel.addForeignLink('br-user');
    await driver.createNetwork(netReq({ driverOptions: { 'com.docker.network.bridge.name': 'br-user' } }));
    expect(kernel.linkMap.get('br-user')?.addresses).toEqual(['172.28.5.254/16']);
    await driver.deleteNetwork(NID);
    await driver.drain();
    expect(kernel.linkMap.get('br-user')).toMatchObject({ addresses: [] });
  });

  test('a non-bridge link with the requested name is refused', async () => {
    const { kernel, driver } = await setup();
    kernel.addForeignLink('eth9', '');
    await expectCode(driver.createNetwork(netReq({ driverOptions: { 'com.docker.network.bridge.name': 'eth9' } })), 'TSN_INVALID_OPTION');
  });

  test('a kernel failure mid-setup rolls back: no bridge, no record, no firewall element', async () => {
    const { store, kernel, driver } = await setup();
    kernel.failOn((c) => c.op === 'link.up', 'RTNETLINK answers: injected');
    const err = await expectCode(driver.createNetwork(netReq()), 'TSN_KERNEL');
    expect(err.message).toMatch(/step "bridge up"/);
    expect(kernel.linkMap.size).toBe(0);
    expect(kernel.firewall.networks.size).toBe(0);
    expect(await store.all('network')).toEqual([]);
  });

  test('network listeners run after a create (its bridge and gateway already made) and a delete, not after a failed create', async () => {
    const { kernel, driver } = await setup();
    const seen: Array<{ networks: number; gatewayOnBridge: boolean }> = [];
    driver.onNetworksChanged(() => {
      const net = driver.state().networks.at(0);
      const bridge = net?.mode === 'bridge' ? kernel.linkMap.get(net.bridge) : undefined;
      seen.push({ networks: driver.state().networks.length, gatewayOnBridge: bridge?.addresses.includes('172.28.5.254/16') ?? false });
    });
    driver.onNetworksChanged(() => {
      throw new Error('a failing listener must not fail the call');
    });
    kernel.failOn((c) => c.op === 'link.up', 'RTNETLINK answers: injected');
    await expectCode(driver.createNetwork(netReq()), 'TSN_KERNEL');
    expect(seen).toEqual([]);
    await driver.createNetwork(netReq());
    await driver.deleteNetwork(NID);
    await driver.deleteNetwork(NID);
    expect(seen).toEqual([
      { networks: 1, gatewayOnBridge: true },
      { networks: 0, gatewayOnBridge: false },
    ]);
  });

  test('DeleteNetwork removes the bridge and the record, drops the firewall table with the last network, and is idempotent', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    await driver.deleteNetwork(NID);
    await driver.deleteNetwork(NID);
    await driver.deleteNetwork('f'.repeat(64));
    await driver.drain();
    expect(await store.all('tombstone')).toEqual([]);
    expect(kernel.linkMap.size).toBe(0);
    expect(kernel.firewall.base).toBe(false);
    expect(await store.all('network')).toEqual([]);
  });
});

describe('bridge endpoints', () => {
  test('CreateEndpoint makes a veth on the bridge and returns only the MAC it generated', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq({ driverOptions: { 'com.docker.network.driver.mtu': '1450' } }));
    const reply = await driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.2/16' }, options: {} });
    // Derived from the address like Docker's, so a successor on the same address keeps neighbours' ARP entries valid.
    expect(reply).toEqual({ macAddress: '02:42:ac:1c:05:02' });
    expect(kernel.linkMap.get('tsvbbbbbbbbbbbb')).toMatchObject({ master: 'tsbr-aaaaaaaaaa', up: true, mtu: 1450 });
    expect(kernel.linkMap.get('tscbbbbbbbbbbbb')).toMatchObject({ mac: reply.macAddress, up: false });
    expect(await store.all('endpoint')).toHaveLength(1);
  });

  test('a MAC given by dockerd is used and not echoed back', async () => {
    const { kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    const reply = await driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.2/16', macAddress: '02:42:AC:1C:05:02' }, options: {} });
    expect(reply).toEqual({});
    expect(kernel.linkMap.get('tscbbbbbbbbbbbb')?.mac).toBe('02:42:ac:1c:05:02');
  });

  test.each([
    [{ address: '10.9.9.9/24' }, {}, 'TSN_INVALID_ADDRESS', /10\.9\.9\.9/],
    [{ address: '172.28.5.2/16', macAddress: 'zz:zz' }, {}, 'TSN_INVALID_ADDRESS', /MacAddress "zz:zz"/],
    [{ address: '172.28.5.2/16' }, { vlan: '5' }, 'TSN_INVALID_OPTION', /"vlan"/],
  ])('bad endpoint %j %j is refused and changes nothing', async (iface, options, code, re) => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    const before = kernel.applied.length;
    const err = await expectCode(driver.createEndpoint({ networkId: NID, endpointId: EID, iface, options }), code);
    expect(err.message).toMatch(re);
    expect(kernel.applied.length).toBe(before);
    expect(await store.all('endpoint')).toEqual([]);
  });

  test('endpoint on an unknown network is an error; duplicates are refused', async () => {
    const { driver } = await setup();
    await expectCode(driver.createEndpoint({ networkId: NID, endpointId: EID, iface: {}, options: {} }), 'TSN_UNKNOWN_NETWORK');
    await driver.createNetwork(netReq());
    await driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.2/16' }, options: {} });
    await expectCode(driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.3/16' }, options: {} }), 'TSN_ENDPOINT_EXISTS');
  });

  test('veth failure rolls back the record', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    kernel.failOn((c) => c.op === 'link.master');
    await expectCode(driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.2/16' }, options: {} }), 'TSN_KERNEL');
    expect(kernel.linkMap.has('tsvbbbbbbbbbbbb')).toBe(false);
    expect(await store.all('endpoint')).toEqual([]);
  });

  test('Join on an internal network gives no gateway and disables the gateway service; Leave/Delete are idempotent', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq({ internal: true, driverOptions: { 'com.docker.network.container_iface_prefix': 'lan' } }));
    await driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.2/16' }, options: {} });
    const j = await driver.join({ networkId: NID, endpointId: EID, sandboxKey: '/var/run/docker/netns/abc', options: {} });
    expect(j).toEqual({ srcName: 'tscbbbbbbbbbbbb', dstPrefix: 'lan', staticRoutes: [], disableGatewayService: true });
    expect((await store.all('endpoint'))[0].sandboxKey).toBe('/var/run/docker/netns/abc');
    await driver.leave(NID, EID);
    await driver.leave(NID, EID);
    await driver.deleteEndpoint(NID, EID);
    await driver.deleteEndpoint(NID, EID);
    await driver.leave(NID, EID2);
    await driver.drain();
    expect(kernel.linkMap.has('tsvbbbbbbbbbbbb')).toBe(false);
    expect(await store.all('endpoint')).toEqual([]);
  });

  test('Join of an unknown endpoint is an error', async () => {
    const { driver } = await setup();
    await driver.createNetwork(netReq());
    await expectCode(driver.join({ networkId: NID, endpointId: EID, sandboxKey: '/x', options: {} }), 'TSN_UNKNOWN_ENDPOINT');
  });
});

describe('endpoint calls check the endpoint belongs to the NetworkID named', () => {
  const SCTP = [{ proto: 'sctp' as const, port: 9, hostPort: 40009, hostPortEnd: 40009 }];

  /** Two networks; the endpoint lives on the first, joined and with a published port. */
  async function twoNetworks() {
    const t = await setup();
    await t.driver.createNetwork(netReq());
    await t.driver.createNetwork(netReq({ networkId: NID2, ipv4: [{ addressSpace: 'tsnet-local', pool: '10.77.0.0/24', gateway: '10.77.0.1/24', auxAddresses: {} }] }));
    await t.driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.2/16' }, options: {} });
    await t.driver.join({ networkId: NID, endpointId: EID, sandboxKey: '/var/run/docker/netns/abc', options: {} });
    await t.driver.programExternalConnectivity({ networkId: NID, endpointId: EID, portBindings: SCTP });
    return t;
  }

  test.each([
    ['DeleteEndpoint', (d: TsnetDriver) => d.deleteEndpoint(NID2, EID)],
    ['Leave', (d: TsnetDriver) => d.leave(NID2, EID)],
    ['Join', (d: TsnetDriver) => d.join({ networkId: NID2, endpointId: EID, sandboxKey: '/var/run/docker/netns/def', options: {} })],
    ['EndpointOperInfo', (d: TsnetDriver) => d.endpointOperInfo(NID2, EID)],
    ['ProgramExternalConnectivity', (d: TsnetDriver) => d.programExternalConnectivity({ networkId: NID2, endpointId: EID, portBindings: [] })],
    ['RevokeExternalConnectivity', (d: TsnetDriver) => d.revokeExternalConnectivity(NID2, EID)],
  ])('%s with the endpoint of another network is refused naming both ids and changes nothing', async (_call, call) => {
    const { store, kernel, driver } = await twoNetworks();
    const applied = kernel.applied.length;
    const fwCalls = kernel.firewall.calls.length;
    const before = await store.all('endpoint');
    const err = await expectCode(call(driver), 'TSN_UNKNOWN_ENDPOINT');
    expect(err.message).toContain(EID);
    expect(err.message).toContain(NID2);
    await driver.drain();
    expect(await store.all('endpoint')).toEqual(before);
    expect(before[0]).toMatchObject({ networkId: NID, sandboxKey: '/var/run/docker/netns/abc', ports: [{ proto: 'sctp', hostPort: 40009 }] });
    expect(kernel.applied.length).toBe(applied);
    expect(kernel.firewall.calls.length).toBe(fwCalls);
    expect(kernel.linkMap.has('tsvbbbbbbbbbbbb')).toBe(true);
    await driver.stop();
  });

  test('an unknown endpoint of a known network stays idempotent for the calls dockerd replays', async () => {
    const { store, driver } = await twoNetworks();
    await driver.revokeExternalConnectivity(NID2, EID2);
    await driver.leave(NID2, EID2);
    await driver.deleteEndpoint(NID2, EID2);
    expect(await driver.endpointOperInfo(NID2, EID2)).toEqual({});
    expect(await store.all('endpoint')).toHaveLength(1);
    await driver.stop();
  });
});

describe('reconcile after a restart', () => {
  test('a link whose background deletion did not happen (crash, failure) is deleted from its tombstone at start', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(netReq());
    await driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.2/16' }, options: {} });
    kernel.failOn((c) => c.op === 'link.del', 'RTNETLINK answers: Device or resource busy');
    await driver.deleteEndpoint(NID, EID);
    await driver.drain();
    expect(kernel.linkMap.has('tsvbbbbbbbbbbbb')).toBe(true);
    expect((await store.all('tombstone')).map((t) => t.link)).toEqual(['tsvbbbbbbbbbbbb']);
    await (await TsnetDriver.load(store, kernel)).reconcile();
    expect(kernel.linkMap.has('tsvbbbbbbbbbbbb')).toBe(false);
    expect(await store.all('tombstone')).toEqual([]);
  });

  test('rebuilds a lost bridge and unjoined veth, removes orphans it generated, spares look-alikes', async () => {
    const store = new SqliteStore(':memory:');
    const first = new FakeKernel();
    const d1 = await TsnetDriver.load(store, first);
    await d1.createNetwork(netReq());
    await d1.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.2/16' }, options: {} });

    // A host that rebooted: nothing in the kernel but an orphan veth from a crash and a user's look-alike link.
    const kernel = new FakeKernel();
    await kernel.apply([{ op: 'veth.add', name: 'tsv000000000000', peer: 'tsc000000000000' }]);
    kernel.addForeignLink('tsvpn0', 'tun');
    // Same name shape and kind, but another tsnet's (its owner tag differs): never touched.
    kernel.addForeignLink('tsv111111111111', 'veth');
    const d2 = await TsnetDriver.load(store, kernel);
    await d2.reconcile();
    expect(kernel.linkMap.get('tsbr-aaaaaaaaaa')).toMatchObject({ up: true, addresses: ['172.28.5.254/16'] });
    expect(kernel.linkMap.get('tsvbbbbbbbbbbbb')).toMatchObject({ master: 'tsbr-aaaaaaaaaa', up: true });
    expect(kernel.linkMap.has('tsv000000000000')).toBe(false);
    expect(kernel.linkMap.has('tsvpn0')).toBe(true);
    expect(kernel.linkMap.has('tsv111111111111')).toBe(true);
    expect(kernel.firewall.networks.has('tsbr-aaaaaaaaaa')).toBe(true);
  });

  test('restores a lost gateway address on an existing bridge without re-creating it', async () => {
    const store = new SqliteStore(':memory:');
    const kernel = new FakeKernel();
    const d1 = await TsnetDriver.load(store, kernel);
    await d1.createNetwork(netReq());
    await kernel.apply([{ op: 'addr.del', dev: 'tsbr-aaaaaaaaaa', cidr: '172.28.5.254/16' }]);
    const applied = kernel.applied.length;
    await (await TsnetDriver.load(store, kernel)).reconcile();
    const changes = kernel.applied.slice(applied);
    expect(changes).toContainEqual({ op: 'addr.add', dev: 'tsbr-aaaaaaaaaa', cidr: '172.28.5.254/16' });
    expect(changes.filter((c) => c.op !== 'sysctl.set' && c.op !== 'addr.add')).toEqual([]);
    expect(kernel.linkMap.get('tsbr-aaaaaaaaaa')?.addresses).toEqual(['172.28.5.254/16']);
  });

  test.each([
    ['IPv4-only', netReq(), { 'net/ipv6/conf/tsbr-aaaaaaaaaa/disable_ipv6': '1', 'net/ipv4/conf/tsbr-aaaaaaaaaa/route_localnet': '1', 'net/ipv4/ip_forward': '1' }],
    [
      'dual-stack',
      netReq({ enableIPv6: true, ipv6: [{ addressSpace: 'tsnet-local', pool: 'fd00:1::/64', gateway: 'fd00:1::1/64', auxAddresses: {} }] }),
      {
        'net/ipv6/conf/tsbr-aaaaaaaaaa/disable_ipv6': '0',
        'net/ipv6/conf/tsbr-aaaaaaaaaa/accept_ra': '0',
        'net/ipv4/conf/tsbr-aaaaaaaaaa/route_localnet': '1',
        'net/ipv4/ip_forward': '1',
        'net/ipv6/conf/all/forwarding': '1',
      },
    ],
  ])('%s: an existing owned bridge whose sysctls were never written (kill -9 after "bridge up") gets them back', async (_kind, req, want) => {
    const store = new SqliteStore(':memory:');
    const kernel = new FakeKernel();
    await (await TsnetDriver.load(store, kernel)).createNetwork(req);
    // The bridge is up with its addresses, but the process died before the sysctl writes (or the host reset them).
    kernel.sysctls.clear();
    await (await TsnetDriver.load(store, kernel)).reconcile();
    expect(Object.fromEntries(kernel.sysctls)).toEqual(want);
  });

  test('an adopted bridge gets forwarding back but none of the per-bridge sysctls (they are the operator\'s)', async () => {
    const store = new SqliteStore(':memory:');
    const kernel = new FakeKernel();
    kernel.addForeignLink('br-user');
    await (await TsnetDriver.load(store, kernel)).createNetwork(netReq({ driverOptions: { 'com.docker.network.bridge.name': 'br-user' } }));
    kernel.sysctls.clear();
    await (await TsnetDriver.load(store, kernel)).reconcile();
    expect(Object.fromEntries(kernel.sysctls)).toEqual({ 'net/ipv4/ip_forward': '1' });
  });

  test('with no networks left it removes a stale firewall table', async () => {
    const { kernel, driver } = await setup();
    kernel.firewall.base = true;
    await driver.reconcile();
    expect(kernel.firewall.base).toBe(false);
  });
});
