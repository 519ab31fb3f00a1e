import { TsnetDriver } from '../../src/driver/driver';
import { FakeKernel } from '../../src/kernel/fake';
import { TsnetIpam } from '../../src/ipam/driver';
import { SqliteStore } from '../../src/store/sqlite';
import { EID, EID2, NID, NID2, expectCode, setup } from './driver-fixtures';
import { SANDBOX, addNic, childReq, dualStackEndpoint, endpoint, expectRefusedOnEth1, join, setupOn } from './child-fixtures';

const CHILD = 'tsmbbbbbbbbbbbb';
const CHILD2 = 'tsmdddddddddddd';

describe('macvlan on an existing parent', () => {
  test('CreateNetwork changes nothing on the host and records the parent as shared, not owned', async () => {
    const { store, kernel } = await setupOn(childReq('macvlan', 'eth1'));
    expect(kernel.applied).toEqual([]);
    expect(await store.all('network')).toEqual([
      expect.objectContaining({
        id: NID,
        mode: 'macvlan',
        parent: 'eth1',
        parentSpec: { kind: 'nic' },
        settings: { macvlanMode: 'bridge' },
        internal: false,
      }),
    ]);
    expect(await store.all('parent')).toEqual([{ link: 'eth1', owned: false, spec: { kind: 'nic' }, users: [NID] }]);
  });

  test('an endpoint gets the MAC Docker derives from its IPv4; Join makes the macvlan child and replies with it and the gateway', async () => {
    const { store, kernel, driver } = await setupOn(childReq('macvlan', 'eth1'));
    expect(await endpoint(driver, EID, '192.168.10.5/24')).toEqual({ macAddress: '02:42:c0:a8:0a:05' });
    expect(kernel.linkMap.has(CHILD)).toBe(false);
    const reply = await join(driver, EID);
    expect(reply).toEqual({ srcName: CHILD, dstPrefix: 'eth', gateway: '192.168.10.1', staticRoutes: [], disableGatewayService: false });
    expect(kernel.linkMap.get(CHILD)).toMatchObject({ kind: 'macvlan', lower: 'eth1', mac: '02:42:c0:a8:0a:05', owner: kernel.owner });
    expect(kernel.linkMap.get(CHILD)?.macvlanMode).toBe('bridge');
    expect((await store.all('endpoint'))[0]).toMatchObject({ mode: 'macvlan', link: CHILD, sandboxKey: SANDBOX });
  });

  test('a --mac-address is used as given and not echoed back', async () => {
    const { kernel, driver } = await setupOn(childReq('macvlan', 'eth1'));
    expect(await endpoint(driver, EID, '192.168.10.5/24', NID, '02:AA:00:00:00:07')).toEqual({});
    await join(driver, EID);
    expect(kernel.linkMap.get(CHILD)?.mac).toBe('02:aa:00:00:00:07');
  });

  test.each(['private', 'vepa', 'passthru'] as const)('macvlan_mode=%s makes children of that mode', async (m) => {
    const { kernel, driver } = await setupOn(childReq('macvlan', 'eth1', {}, { macvlan_mode: m }));
    await endpoint(driver, EID, '192.168.10.5/24');
    await join(driver, EID);
    expect(kernel.applied).toEqual([expect.objectContaining({ op: 'macvlan.add', name: CHILD, parent: 'eth1', mode: m })]);
  });

  test('an internal network, or one without a gateway, says DisableGatewayService and gives no gateway', async () => {
    const { kernel, driver } = await setup();
    addNic(kernel, 'eth1');
    addNic(kernel, 'eth2');
    await driver.createNetwork(childReq('macvlan', 'eth1', { internal: true }));
    await endpoint(driver, EID, '192.168.10.5/24');
    expect(await join(driver, EID)).toEqual({ srcName: CHILD, dstPrefix: 'eth', staticRoutes: [], disableGatewayService: true });
    await driver.createNetwork(
      childReq('macvlan', 'eth2', { networkId: NID2, ipv4: [{ addressSpace: 'tsnet-local', pool: '10.9.0.0/24', auxAddresses: {} }] }),
    );
    await endpoint(driver, EID2, '10.9.0.5/24', NID2);
    const reply = await join(driver, EID2, NID2);
    expect(reply).toMatchObject({ disableGatewayService: true });
    expect(reply).not.toHaveProperty('gateway');
  });

  test('IPv6: the endpoint gets both gateways; container_iface_prefix sets dstPrefix', async () => {
    const { driver } = await setupOn(
      childReq(
        'macvlan',
        'eth1',
        { enableIPv6: true, ipv6: [{ addressSpace: 'tsnet-local', pool: 'fd00:10::/64', gateway: 'fd00:10::1/64', auxAddresses: {} }] },
        { 'com.docker.network.container_iface_prefix': 'lan' },
      ),
    );
    await dualStackEndpoint(driver, EID, '192.168.10.5/24', 'fd00:10::5/64');
    expect(await join(driver, EID)).toEqual({
      srcName: CHILD,
      dstPrefix: 'lan',
      gateway: '192.168.10.1',
      gatewayIPv6: 'fd00:10::1',
      staticRoutes: [],
      disableGatewayService: false,
    });
  });

  test('Leave deletes the child dockerd gave back; DeleteEndpoint and DeleteNetwork leave the NIC alone', async () => {
    const { store, kernel, driver } = await setupOn(childReq('macvlan', 'eth1'));
    await endpoint(driver, EID, '192.168.10.5/24');
    await join(driver, EID);
    await driver.leave(NID, EID);
    await driver.drain();
    expect(kernel.linkMap.has(CHILD)).toBe(false);
    await driver.deleteEndpoint(NID, EID);
    await driver.deleteNetwork(NID);
    await driver.drain();
    expect([...kernel.linkMap.keys()]).toEqual(['eth1']);
    expect(kernel.linkMap.get('eth1')).toMatchObject({ up: true });
    expect(await store.all('parent')).toEqual([]);
    expect(await store.all('tombstone')).toEqual([]);
  });

  test('DeleteEndpoint of an endpoint whose child is still in the host namespace deletes it (already gone is fine)', async () => {
    const { kernel, driver } = await setupOn(childReq('macvlan', 'eth1'));
    await endpoint(driver, EID, '192.168.10.5/24');
    await endpoint(driver, EID2, '192.168.10.6/24');
    await join(driver, EID);
    await join(driver, EID2);
    kernel.linkMap.delete(CHILD2);
    await driver.deleteEndpoint(NID, EID);
    await driver.deleteEndpoint(NID, EID2);
    await driver.drain();
    expect(kernel.linkMap.has(CHILD)).toBe(false);
    expect(driver.state().endpoints).toEqual([]);
  });

  test('a failed Join leaves the endpoint unjoined and no child behind', async () => {
    const { store, kernel, driver } = await setupOn(childReq('macvlan', 'eth1'));
    await endpoint(driver, EID, '192.168.10.5/24');
    kernel.failOn((c) => c.op === 'macvlan.add', 'injected');
    await expectCode(join(driver, EID), 'TSN_KERNEL');
    expect(kernel.linkMap.has(CHILD)).toBe(false);
    expect((await store.all('endpoint'))[0]).not.toHaveProperty('sandboxKey');
  });

  test('an address off the subnet is refused naming it', async () => {
    const { driver } = await setupOn(childReq('macvlan', 'eth1'));
    const err = await expectCode(endpoint(driver, EID, '10.0.0.5/24'), 'TSN_INVALID_ADDRESS');
    expect(err.message).toMatch(/Interface.Address "10.0.0.5\/24"/);
  });

  test('no ports are published: the host reaches a macvlan container directly, not through NAT', async () => {
    const { kernel, driver } = await setupOn(childReq('macvlan', 'eth1'));
    await endpoint(driver, EID, '192.168.10.5/24');
    await join(driver, EID);
    await driver.programExternalConnectivity({
      networkId: NID,
      endpointId: EID,
      portBindings: [{ proto: 'tcp', port: 80, hostPort: 8080, hostPortEnd: 8080 }],
    });
    expect(kernel.firewall.ports.size).toBe(0);
    expect(kernel.firewall.networks.size).toBe(0);
  });
});

describe('macvlan options and parent checks', () => {
  test.each([
    [{ macvlan_mode: 'foo' }, /option macvlan_mode="foo" \(mode=macvlan\): expected one of bridge, private, vepa, passthru/],
    [{ ipvlan_mode: 'l2' }, /unknown option "ipvlan_mode" for mode=macvlan/],
    [{ 'com.docker.network.bridge.name': 'br0' }, /unknown option "com.docker.network.bridge.name" for mode=macvlan/],
    [{ 'tsnet.host_shim': 'maybe' }, /option tsnet.host_shim="maybe" \(mode=macvlan\): expected true or false/],
    [{ 'com.docker.network.container_iface_prefix': 'Eth-' }, /container_iface_prefix="Eth-" \(mode=macvlan\)/],
  ])('bad option %j is refused naming it and the mode; nothing changes', async (opts, re) => {
    await expectRefusedOnEth1(childReq('macvlan', 'eth1', {}, opts), re);
  });

  test.each([
    ['eth 1', /option parent \(mode=macvlan\) "eth 1"/],
    ['averyveryverylongname', /option parent \(mode=macvlan\) "averyveryverylongname"/],
    ['lo', /option parent \(mode=macvlan\) "lo": reserved/],
  ])('parent %j is refused naming it', async (parent, re) => {
    const { kernel, driver } = await setup();
    const err = await expectCode(driver.createNetwork(childReq('macvlan', parent)), 'TSN_INVALID_OPTION');
    expect(err.message).toMatch(re);
    expect(kernel.applied).toEqual([]);
  });

  test('a missing parent is refused', async () => {
    const { driver } = await setup();
    const err = await expectCode(driver.createNetwork(childReq('macvlan', 'eth9')), 'TSN_INVALID_OPTION');
    expect(err.message).toBe('option parent="eth9" (mode=macvlan): no such link');
  });

  test('a parent that is down is refused and left down (tsnet never changes a NIC it did not create)', async () => {
    const { kernel, driver } = await setup();
    addNic(kernel, 'eth1', { up: false });
    const err = await expectCode(driver.createNetwork(childReq('macvlan', 'eth1')), 'TSN_INVALID_OPTION');
    expect(err.message).toMatch(/option parent="eth1" \(mode=macvlan\): the link is down, and tsnet does not change links it did not create/);
    expect(kernel.linkMap.get('eth1')?.up).toBe(false);
    expect(kernel.applied).toEqual([]);
  });

  test('a bridge port is refused naming its bridge', async () => {
    const { kernel, driver } = await setup();
    addNic(kernel, 'br-lan');
    addNic(kernel, 'eth1', { master: 'br-lan' });
    const err = await expectCode(driver.createNetwork(childReq('macvlan', 'eth1')), 'TSN_INVALID_OPTION');
    expect(err.message).toMatch(/the link is a port of bridge br-lan/);
  });

  test("another tsnet network's bridge, and a bridge tsnet generated, are refused as parents", async () => {
    const { kernel, driver } = await setup();
    await driver.createNetwork(childReq('macvlan', undefined, { networkId: NID2 }, { mode: 'bridge' }));
    const err = await expectCode(driver.createNetwork(childReq('macvlan', 'tsbr-cccccccccc')), 'TSN_INVALID_OPTION');
    expect(err.message).toMatch(/option parent="tsbr-cccccccccc" \(mode=macvlan\): the link belongs to another tsnet network/);
    kernel.linkMap.set('tsbr-eeeeeeeeee', {
      name: 'tsbr-eeeeeeeeee',
      kind: 'bridge',
      owner: kernel.owner,
      mtu: 1500,
      mac: '02:00:00:00:00:02',
      up: true,
      addresses: [],
    });
    const err2 = await expectCode(driver.createNetwork(childReq('macvlan', 'tsbr-eeeeeeeeee')), 'TSN_INVALID_OPTION');
    expect(err2.message).toMatch(/a bridge link tsnet generated cannot be a parent/);
  });

  test('a tsnet bridge network cannot take a macvlan parent as its bridge', async () => {
    const { kernel, driver } = await setup();
    addNic(kernel, 'br-up');
    kernel.linkMap.get('br-up')!.kind = 'bridge';
    await driver.createNetwork(childReq('macvlan', 'br-up'));
    await expectCode(
      driver.createNetwork(childReq('macvlan', undefined, { networkId: NID2 }, { mode: 'bridge', 'com.docker.network.bridge.name': 'br-up' })),
      'TSN_NETWORK_EXISTS',
    );
  });

  test('passthru on a parent another network uses, or with a child link on it, is refused; and so is any network on a passthru parent', async () => {
    const { kernel, driver } = await setup();
    addNic(kernel, 'eth1');
    addNic(kernel, 'eth2');
    addNic(kernel, 'eth3');
    await driver.createNetwork(childReq('macvlan', 'eth1'));
    const sub2 = { ipv4: [{ addressSpace: 'tsnet-local', pool: '10.2.0.0/24', auxAddresses: {} }] };
    let err = await expectCode(
      driver.createNetwork(childReq('macvlan', 'eth1', { networkId: NID2, ...sub2 }, { macvlan_mode: 'passthru' })),
      'TSN_INVALID_OPTION',
    );
    expect(err.message).toBe(
      `option parent="eth1" (mode=macvlan): macvlan_mode=passthru needs the parent alone, and network ${NID.slice(0, 12)} uses it`,
    );
    kernel.linkMap.set('mv0', { name: 'mv0', kind: 'macvlan', lower: 'eth2', mtu: 1500, mac: '02:00:00:00:00:03', up: true, addresses: [] });
    err = await expectCode(
      driver.createNetwork(childReq('macvlan', 'eth2', { networkId: NID2, ...sub2 }, { macvlan_mode: 'passthru' })),
      'TSN_INVALID_OPTION',
    );
    expect(err.message).toBe('option parent="eth2" (mode=macvlan): macvlan_mode=passthru needs the parent alone, and macvlan link mv0 is on it');
    await driver.createNetwork(childReq('macvlan', 'eth3', { networkId: NID2, ...sub2 }, { macvlan_mode: 'passthru' }));
    err = await expectCode(
      driver.createNetwork(
        childReq('macvlan', 'eth3', { networkId: 'e'.repeat(64), ipv4: [{ addressSpace: 'tsnet-local', pool: '10.3.0.0/24', auxAddresses: {} }] }),
      ),
      'TSN_INVALID_OPTION',
    );
    expect(err.message).toBe(`option parent="eth3" (mode=macvlan): macvlan_mode=passthru network ${NID2.slice(0, 12)} holds it alone`);
  });

  test('two networks with overlapping subnets on one parent are refused; on different parents they are fine', async () => {
    const { kernel, driver } = await setupOn(childReq('macvlan', 'eth1'));
    addNic(kernel, 'eth2');
    const overlapping = { networkId: NID2, ipv4: [{ addressSpace: 'tsnet-local', pool: '192.168.10.128/25', auxAddresses: {} }] };
    const err = await expectCode(driver.createNetwork(childReq('macvlan', 'eth1', overlapping)), 'TSN_INVALID_OPTION');
    expect(err.message).toBe(
      `option parent="eth1" (mode=macvlan): subnet 192.168.10.128/25 overlaps subnet 192.168.10.0/24 of network ${NID.slice(0, 12)} on the same parent`,
    );
    await driver.createNetwork(childReq('macvlan', 'eth2', overlapping));
    await driver.createNetwork(
      childReq('macvlan', 'eth1', { networkId: 'e'.repeat(64), ipv4: [{ addressSpace: 'tsnet-local', pool: '192.168.11.0/24', auxAddresses: {} }] }),
    );
    expect(driver.state().parents.find((p) => p.link === 'eth1')?.users).toEqual([NID, 'e'.repeat(64)]);
  });

  test('a parent with ipvlan links on it is refused (the kernel keeps one kind per parent)', async () => {
    const { kernel, driver } = await setup();
    addNic(kernel, 'eth1');
    kernel.linkMap.set('ipv0', { name: 'ipv0', kind: 'ipvlan', lower: 'eth1', mtu: 1500, mac: '02:00:00:00:00:01', up: true, addresses: [] });
    const err = await expectCode(driver.createNetwork(childReq('macvlan', 'eth1')), 'TSN_INVALID_OPTION');
    expect(err.message).toBe(
      'option parent="eth1" (mode=macvlan): ipvlan link ipv0 is on it, and a parent carries macvlan or ipvlan links, never both',
    );
  });
});

describe('macvlan across a restart', () => {
  test("a joined endpoint's child survives the sweep (dockerd's Leave deletes it); an orphan child is swept", async () => {
    const { store, kernel, driver } = await setupOn(childReq('macvlan', 'eth1'));
    await endpoint(driver, EID, '192.168.10.5/24');
    await join(driver, EID);
    // A child left by a crash between making it and recording its endpoint, and another tsnet's child.
    kernel.linkMap.set(CHILD2, {
      name: CHILD2,
      kind: 'macvlan',
      lower: 'eth1',
      owner: kernel.owner,
      mtu: 1500,
      mac: '02:00:00:00:00:04',
      up: false,
      addresses: [],
    });
    kernel.linkMap.set('tsmeeeeeeeeeeee', {
      name: 'tsmeeeeeeeeeeee',
      kind: 'macvlan',
      lower: 'eth1',
      owner: 'tsnet:other',
      mtu: 1500,
      mac: '02:00:00:00:00:05',
      up: false,
      addresses: [],
    });
    const restarted = await TsnetDriver.load(store, kernel);
    await restarted.reconcile();
    expect(kernel.linkMap.has(CHILD)).toBe(true);
    expect(kernel.linkMap.has(CHILD2)).toBe(false);
    expect(kernel.linkMap.has('tsmeeeeeeeeeeee')).toBe(true);
    expect(kernel.linkMap.has('eth1')).toBe(true);
    await restarted.leave(NID, EID);
    await restarted.deleteEndpoint(NID, EID);
    await restarted.deleteNetwork(NID);
    await restarted.drain();
    expect([...kernel.linkMap.keys()].sort()).toEqual(['eth1', 'tsmeeeeeeeeeeee']);
  });

  test('a missing NIC parent is not made up; its record stays for when the operator restores it', async () => {
    const { store } = await setupOn(childReq('macvlan', 'eth1'));
    const fresh = new FakeKernel();
    const restarted = await TsnetDriver.load(store, fresh);
    await restarted.reconcile();
    expect(fresh.applied).toEqual([]);
    expect(restarted.state().parents).toEqual([{ link: 'eth1', owned: false, spec: { kind: 'nic' }, users: [NID] }]);
  });
});

describe('GetCapabilities', () => {
  test('Scope local (a network without --scope stays local, bridges too), ConnectivityScope global (swarm --config-from)', async () => {
    const { driver } = await setup();
    expect(driver.capabilities()).toEqual({ scope: 'local', connectivityScope: 'global' });
  });
});

describe('host shim (tsnet.host_shim=true)', () => {
  const SHIM = 'tshs-aaaaaaaaaa';
  /** A driver whose host addresses come from tsnet's IPAM, holding the network's pool 192.168.10.0/24. */
  async function withIpam() {
    const store = new SqliteStore(':memory:');
    const kernel = new FakeKernel();
    addNic(kernel, 'eth1');
    const ipam = await TsnetIpam.load(store, { defaultPoolsV4: [], defaultPoolsV6: [], hostRoutes: () => Promise.resolve([]) });
    const driver = await TsnetDriver.load(store, kernel, ipam.hostAddresses);
    const pool = await ipam.requestPool({ addressSpace: 'tsnet-local', pool: '192.168.10.0/24', subPool: '', options: {}, v6: false });
    return { kernel, ipam, driver, pool };
  }
  const withAux = (aux: Record<string, string>) => ({
    ipv4: [{ addressSpace: 'LocalDefault', pool: '192.168.10.0/24', gateway: '192.168.10.1/24', auxAddresses: aux }],
  });

  test('--aux-address host_shim=IP: a bridge-mode macvlan on the parent, up, with IP/32; a /32 route per endpoint out of it, removed with the endpoint', async () => {
    const { store, kernel, driver } = await setup();
    addNic(kernel, 'eth1');
    kernel.routeTable.push({ dst: '192.168.10.0/24', dev: 'eth1' });
    await driver.createNetwork(childReq('macvlan', 'eth1', withAux({ host_shim: '192.168.10.250/24' }), { 'tsnet.host_shim': 'true' }));
    expect(kernel.linkMap.get(SHIM)).toMatchObject({
      kind: 'macvlan',
      lower: 'eth1',
      up: true,
      addresses: ['192.168.10.250/32'],
      owner: kernel.owner,
    });
    expect(kernel.linkMap.get(SHIM)?.macvlanMode).toBe('bridge');
    expect((await store.all('network'))[0]).toMatchObject({ shim: { link: SHIM, addresses: ['192.168.10.250/32'], reserved: [] } });
    await endpoint(driver, EID, '192.168.10.5/24');
    await endpoint(driver, EID2, '192.168.10.6/24');
    // The host's own route to the LAN stays; each container is reached through the shim.
    expect(kernel.routeTable).toEqual([
      { dst: '192.168.10.0/24', dev: 'eth1' },
      { dst: '192.168.10.5/32', dev: SHIM },
      { dst: '192.168.10.6/32', dev: SHIM },
    ]);
    await driver.deleteEndpoint(NID, EID);
    expect(kernel.routeTable).toEqual([
      { dst: '192.168.10.0/24', dev: 'eth1' },
      { dst: '192.168.10.6/32', dev: SHIM },
    ]);
    await driver.deleteEndpoint(NID, EID2);
    await driver.deleteNetwork(NID);
    await driver.drain();
    expect([...kernel.linkMap.keys()]).toEqual(['eth1']);
    expect(kernel.routeTable).toEqual([{ dst: '192.168.10.0/24', dev: 'eth1' }]);
  });

  test('IPv6: the shim gets an /128 and each endpoint a /128 route', async () => {
    const { kernel, driver } = await setupOn(
      childReq(
        'macvlan',
        'eth1',
        {
          ...withAux({ host_shim: '192.168.10.250/24' }),
          enableIPv6: true,
          ipv6: [{ addressSpace: 'LocalDefault', pool: 'fd00:30::/64', gateway: 'fd00:30::1/64', auxAddresses: { host_shim: 'fd00:30::fa/64' } }],
        },
        { 'tsnet.host_shim': 'true' },
      ),
    );
    expect(kernel.linkMap.get(SHIM)?.addresses).toEqual(['192.168.10.250/32', 'fd00:30::fa/128']);
    await dualStackEndpoint(driver, EID, '192.168.10.5/24', 'fd00:30::5/64');
    expect(kernel.routeTable).toEqual([
      { dst: '192.168.10.5/32', dev: SHIM },
      { dst: 'fd00:30::5/128', dev: SHIM },
    ]);
  });

  test("no aux address on a tsnet IPAM pool: the shim's address is reserved there and released with the network", async () => {
    const { kernel, ipam, driver, pool } = await withIpam();
    await ipam.requestAddress({ poolId: pool.poolId, address: '192.168.10.1', options: { RequestAddressType: 'com.docker.network.gateway' } });
    await driver.createNetwork(childReq('macvlan', 'eth1', {}, { 'tsnet.host_shim': 'true' }));
    const shimAddr = kernel.linkMap.get(SHIM)?.addresses[0];
    expect(shimAddr).toBe('192.168.10.2/32');
    // dockerd's next container does not get it.
    expect((await ipam.requestAddress({ poolId: pool.poolId, address: '', options: {} })).address).toBe('192.168.10.3/24');
    await driver.deleteNetwork(NID);
    expect((await ipam.requestAddress({ poolId: pool.poolId, address: '192.168.10.2', options: {} })).address).toBe('192.168.10.2/24');
  });

  test('a failed create gives the reserved address back', async () => {
    const { kernel, ipam, driver, pool } = await withIpam();
    kernel.failOn((c) => c.op === 'link.up', 'injected');
    await expectCode(driver.createNetwork(childReq('macvlan', 'eth1', {}, { 'tsnet.host_shim': 'true' })), 'TSN_KERNEL');
    expect(kernel.linkMap.has(SHIM)).toBe(false);
    expect((await ipam.requestAddress({ poolId: pool.poolId, address: '', options: {} })).address).toBe('192.168.10.1/24');
  });

  test("no aux address and a pool that is not tsnet's: refused naming the option", async () => {
    const { kernel, driver } = await setup();
    addNic(kernel, 'eth1');
    const err = await expectCode(driver.createNetwork(childReq('macvlan', 'eth1', withAux({}), { 'tsnet.host_shim': 'true' })), 'TSN_INVALID_OPTION');
    expect(err.message).toBe(
      "option tsnet.host_shim=true (mode=macvlan): pool 192.168.10.0/24 (address space LocalDefault) is not one of tsnet's IPAM pools; give the shim an address with --aux-address host_shim=IP",
    );
    expect(kernel.applied).toEqual([]);
  });

  test.each(['private', 'passthru'])('with macvlan_mode=%s it is refused naming both', async (m) => {
    const { kernel, driver } = await setup();
    addNic(kernel, 'eth1');
    const err = await expectCode(
      driver.createNetwork(childReq('macvlan', 'eth1', withAux({ host_shim: '192.168.10.250/24' }), { 'tsnet.host_shim': 'true', macvlan_mode: m })),
      'TSN_INVALID_OPTION',
    );
    expect(err.message).toBe(`option tsnet.host_shim=true (mode=macvlan): needs macvlan_mode=bridge or vepa, not ${m}`);
  });

  test('tsnet.host_shim=false makes no shim', async () => {
    const { kernel, driver } = await setupOn(childReq('macvlan', 'eth1', {}, { 'tsnet.host_shim': 'false' }));
    await endpoint(driver, EID, '192.168.10.5/24');
    expect(kernel.applied).toEqual([]);
  });

  test('after a restart a lost shim comes back with its address and every endpoint route; a present one is kept', async () => {
    const { store, kernel, driver } = await setupOn(
      childReq('macvlan', 'eth1', withAux({ host_shim: '192.168.10.250/24' }), { 'tsnet.host_shim': 'true' }),
    );
    await endpoint(driver, EID, '192.168.10.5/24');
    await endpoint(driver, EID2, '192.168.10.6/24');
    await join(driver, EID);
    await kernel.apply([{ op: 'link.del', name: SHIM }]);
    expect(kernel.routeTable).toEqual([]);
    const restarted = await TsnetDriver.load(store, kernel);
    await restarted.reconcile();
    expect(kernel.linkMap.get(SHIM)).toMatchObject({ kind: 'macvlan', lower: 'eth1', up: true, addresses: ['192.168.10.250/32'] });
    expect(kernel.routeTable).toEqual([
      { dst: '192.168.10.5/32', dev: SHIM },
      { dst: '192.168.10.6/32', dev: SHIM },
    ]);
    expect(kernel.linkMap.has(CHILD)).toBe(true);
    kernel.applied.length = 0;
    await (await TsnetDriver.load(store, kernel)).reconcile();
    expect(kernel.applied).toEqual([]);
  });
});

describe('Join after Leave', () => {
  test('Join waits for the deletion a Leave queued under the same link name, then makes the link again', async () => {
    const { kernel, driver } = await setupOn(childReq('macvlan', 'eth1'));
    await endpoint(driver, EID, '192.168.10.5/24');
    await join(driver, EID);
    const deletion = kernel.pauseAt((c) => c.call === 'apply' && c.change.op === 'link.del');
    const creation = kernel.pauseAt((c) => c.call === 'apply' && c.change.op === 'macvlan.add');
    await driver.leave(NID, EID);
    await deletion.reached;
    let created = false;
    const noticed = creation.reached.then(() => (created = true));
    const joined = join(driver, EID);
    // Enough turns of the event loop for Join to reach the kernel if it does not wait.
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    expect(created).toBe(false);
    creation.release();
    deletion.release();
    await joined;
    await noticed;
    await driver.drain();
    expect(kernel.linkMap.get(CHILD)).toMatchObject({ kind: 'macvlan', lower: 'eth1' });
  });
});
