import { EID, EID2, NID, NID2, expectCode, setup } from './driver-fixtures';
import { addNic, childReq, dualStackEndpoint, endpoint, expectRefusedOnEth1, join, setupOn } from './child-fixtures';

const CHILD = 'tsibbbbbbbbbbbb';
const V6 = { enableIPv6: true, ipv6: [{ addressSpace: 'tsnet-local', pool: 'fd00:20::/64', gateway: 'fd00:20::1/64', auxAddresses: {} }] };

describe('ipvlan', () => {
  test('defaults l2 + bridge: Join makes the ipvlan child (no MAC of its own) and replies with the gateway', async () => {
    const { store, kernel, driver } = await setupOn(childReq('ipvlan', 'eth1'));
    expect((await store.all('network'))[0]).toMatchObject({ mode: 'ipvlan', settings: { ipvlanMode: 'l2', ipvlanFlag: 'bridge' } });
    expect(await endpoint(driver, EID, '192.168.10.5/24')).toEqual({});
    expect(await join(driver, EID)).toEqual({
      srcName: CHILD,
      dstPrefix: 'eth',
      gateway: '192.168.10.1',
      staticRoutes: [],
      disableGatewayService: false,
    });
    expect(kernel.applied).toEqual([{ op: 'ipvlan.add', name: CHILD, parent: 'eth1', mode: 'l2', flag: 'bridge' }]);
    expect(kernel.linkMap.get(CHILD)).toMatchObject({ kind: 'ipvlan', lower: 'eth1', mac: kernel.linkMap.get('eth1')?.mac });
    expect((await store.all('endpoint'))[0]).not.toHaveProperty('mac');
  });

  test.each([
    ['l3', 'private'],
    ['l3s', 'vepa'],
  ] as const)('ipvlan_mode=%s (flag %s): no gateway on the wire, connected default routes per family, DisableGatewayService', async (m, flag) => {
    const { kernel, driver } = await setupOn(childReq('ipvlan', 'eth1', V6, { ipvlan_mode: m, ipvlan_flag: flag }));
    await dualStackEndpoint(driver, EID, '192.168.10.5/24', 'fd00:20::5/64');
    expect(await join(driver, EID)).toEqual({
      srcName: CHILD,
      dstPrefix: 'eth',
      staticRoutes: [
        { destination: '0.0.0.0/0', routeType: 1 },
        { destination: '::/0', routeType: 1 },
      ],
      disableGatewayService: true,
    });
    expect(kernel.applied).toEqual([{ op: 'ipvlan.add', name: CHILD, parent: 'eth1', mode: m, flag }]);
  });

  test('l3 on an internal network: no routes out, no gateway', async () => {
    const { driver } = await setupOn(childReq('ipvlan', 'eth1', { internal: true }, { ipvlan_mode: 'l3' }));
    await endpoint(driver, EID, '192.168.10.5/24');
    expect(await join(driver, EID)).toEqual({ srcName: CHILD, dstPrefix: 'eth', staticRoutes: [], disableGatewayService: true });
  });

  test('l3 IPv4-only endpoint gets only the IPv4 default route', async () => {
    const { driver } = await setupOn(childReq('ipvlan', 'eth1', {}, { ipvlan_mode: 'l3' }));
    await endpoint(driver, EID, '192.168.10.5/24');
    expect((await join(driver, EID)).staticRoutes).toEqual([{ destination: '0.0.0.0/0', routeType: 1 }]);
  });

  test('a --mac-address is refused naming it (ipvlan links share the parent MAC); nothing is recorded', async () => {
    const { store, driver } = await setupOn(childReq('ipvlan', 'eth1'));
    const err = await expectCode(endpoint(driver, EID, '192.168.10.5/24', NID, '02:42:00:00:00:09'), 'TSN_INVALID_ADDRESS');
    expect(err.message).toMatch(
      /^Interface.MacAddress "02:42:00:00:00:09": ipvlan links share their parent's MAC, so mode=ipvlan takes no --mac-address/,
    );
    expect(await store.all('endpoint')).toEqual([]);
  });

  test.each([
    [{ ipvlan_mode: 'l4' }, /^option ipvlan_mode="l4" \(mode=ipvlan\): expected one of l2, l3, l3s$/],
    [{ ipvlan_flag: 'passthru' }, /^option ipvlan_flag="passthru" \(mode=ipvlan\): expected one of bridge, private, vepa$/],
    [{ macvlan_mode: 'bridge' }, /^unknown option "macvlan_mode" for mode=ipvlan/],
    [{ 'tsnet.host_shim': 'true' }, /^unknown option "tsnet.host_shim" for mode=ipvlan/],
    [{ parent: 'eth1.4095' }, /^option parent \(mode=ipvlan\) "eth1.4095"/],
  ])('bad option %j is refused naming it and the mode; nothing changes', async (opts, re) => {
    await expectRefusedOnEth1(childReq('ipvlan', 'eth1', {}, opts), re);
  });

  test('an ipvlan network on a parent with a macvlan network, or macvlan links, is refused', async () => {
    const { kernel, driver } = await setupOn(childReq('macvlan', 'eth1'));
    addNic(kernel, 'eth2');
    const other = { networkId: NID2, ipv4: [{ addressSpace: 'tsnet-local', pool: '10.5.0.0/24', auxAddresses: {} }] };
    let err = await expectCode(driver.createNetwork(childReq('ipvlan', 'eth1', other)), 'TSN_INVALID_OPTION');
    expect(err.message).toMatch(/^option parent="eth1" \(mode=ipvlan\): macvlan network aaaaaaaaaaaa uses it/);
    await kernel.apply([{ op: 'macvlan.add', name: 'mv9', parent: 'eth2', mode: 'bridge' }]);
    err = await expectCode(driver.createNetwork(childReq('ipvlan', 'eth2', other)), 'TSN_INVALID_OPTION');
    expect(err.message).toMatch(/^option parent="eth2" \(mode=ipvlan\): macvlan link mv9 is on it/);
  });

  test.each([
    [{ ipvlan_mode: 'l3' }, 'ipvlan_mode=l2 ipvlan_flag=bridge'],
    [{ ipvlan_flag: 'private' }, 'ipvlan_mode=l2 ipvlan_flag=bridge'],
  ])('a second ipvlan network with another mode or flag on one parent (%j) is refused; the same mode and flag share it', async (opts, held) => {
    const { store, driver } = await setupOn(childReq('ipvlan', 'eth1'));
    const other = { networkId: NID2, ipv4: [{ addressSpace: 'tsnet-local', pool: '10.5.0.0/24', auxAddresses: {} }] };
    const err = await expectCode(driver.createNetwork(childReq('ipvlan', 'eth1', other, opts)), 'TSN_INVALID_OPTION');
    expect(err.message).toBe(`option parent="eth1" (mode=ipvlan): ipvlan network aaaaaaaaaaaa uses it with ${held}, and the kernel keeps one mode and flag per parent`);
    expect(await store.all('network')).toHaveLength(1);
    await driver.createNetwork(childReq('ipvlan', 'eth1', other, { ipvlan_mode: 'l2', ipvlan_flag: 'bridge' }));
    expect(await store.all('network')).toHaveLength(2);
  });

  test('Leave and DeleteEndpoint delete the child; two endpoints share the parent', async () => {
    const { kernel, driver } = await setupOn(childReq('ipvlan', 'eth1', {}, { ipvlan_mode: 'l3' }));
    await endpoint(driver, EID, '192.168.10.5/24');
    await endpoint(driver, EID2, '192.168.10.6/24');
    await join(driver, EID);
    await join(driver, EID2);
    expect(kernel.linkMap.get('tsidddddddddddd')?.lower).toBe('eth1');
    await driver.leave(NID, EID);
    await driver.deleteEndpoint(NID, EID);
    await driver.deleteEndpoint(NID, EID2);
    await driver.deleteNetwork(NID);
    await driver.drain();
    expect([...kernel.linkMap.keys()]).toEqual(['eth1']);
  });
});

describe('the fake kernel refuses what the real one does', () => {
  test('macvlan and ipvlan children on one parent: EBUSY; passthru takes a parent alone', async () => {
    const { kernel } = await setup();
    addNic(kernel, 'eth1');
    addNic(kernel, 'eth2');
    await kernel.apply([{ op: 'macvlan.add', name: 'mv1', parent: 'eth1', mode: 'bridge' }]);
    await expect(kernel.apply([{ op: 'ipvlan.add', name: 'iv1', parent: 'eth1', mode: 'l2', flag: 'bridge' }])).rejects.toThrow(/busy/);
    await expect(kernel.apply([{ op: 'macvlan.add', name: 'mv2', parent: 'eth1', mode: 'passthru' }])).rejects.toThrow(/busy/);
    await kernel.apply([{ op: 'macvlan.add', name: 'mv3', parent: 'eth2', mode: 'passthru' }]);
    await expect(kernel.apply([{ op: 'macvlan.add', name: 'mv4', parent: 'eth2', mode: 'bridge' }])).rejects.toThrow(/busy/);
  });
});
