import { TsnetDriver } from '../../src/driver/driver';
import { parseParent } from '../../src/driver/parent';
import { TsnetError } from '../../src/errors';
import { EID, NID, NID2, expectCode, setup } from './driver-fixtures';
import { addNic, childReq, endpoint, join, setupOn } from './child-fixtures';

const NID3 = 'e'.repeat(64);
const DUMMY = 'tsdm-aaaaaaaaaa';
const sub = (pool: string, networkId: string) => ({ networkId, ipv4: [{ addressSpace: 'tsnet-local', pool, auxAddresses: {} }] });

describe('parseParent', () => {
  test.each([
    ['eth1', { link: 'eth1', spec: { kind: 'nic' } }],
    ['eth1.10', { link: 'eth1.10', spec: { kind: 'vlan', lower: 'eth1', vlanId: 10 } }],
    ['bond0.4094', { link: 'bond0.4094', spec: { kind: 'vlan', lower: 'bond0', vlanId: 4094 } }],
    ['', { link: DUMMY, spec: { kind: 'dummy' } }],
    [undefined, { link: DUMMY, spec: { kind: 'dummy' } }],
  ])('%j', (value, want) => {
    expect(parseParent(value, NID, 'macvlan')).toEqual(want);
  });

  test.each(['eth1.0', 'eth1.4095', 'eth1.x', 'eth1.010', '.10', 'eth1.', 'eth1.10.x', 'eth1..10', 'a-very-long-n.10'])(
    '%j is refused naming it and the mode',
    (value) => {
      let err: unknown;
      try {
        parseParent(value, NID, 'ipvlan');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(TsnetError);
      expect((err as TsnetError).code).toBe('TSN_INVALID_OPTION');
      expect((err as TsnetError).message).toContain(`option parent (mode=ipvlan)`);
      expect((err as TsnetError).message).toContain(JSON.stringify(value).slice(0, 8));
    },
  );
});

describe('802.1Q parents', () => {
  test('a missing NAME.ID is created on NAME with that VLAN id, brought up, owned; committed with the network; deleted with it', async () => {
    const { store, kernel, driver } = await setupOn(childReq('macvlan', 'eth1.10'));
    expect(kernel.linkMap.get('eth1.10')).toMatchObject({ kind: 'vlan', lower: 'eth1', vlanId: 10, up: true, owner: kernel.owner });
    expect(await store.all('parent')).toEqual([{ link: 'eth1.10', owned: true, spec: { kind: 'vlan', lower: 'eth1', vlanId: 10 }, users: [NID] }]);
    await endpoint(driver, EID, '192.168.10.5/24');
    await join(driver, EID);
    expect(kernel.linkMap.get('tsmbbbbbbbbbbbb')).toMatchObject({ kind: 'macvlan', lower: 'eth1.10' });
    await driver.leave(NID, EID);
    await driver.deleteEndpoint(NID, EID);
    await driver.deleteNetwork(NID);
    await driver.drain();
    expect([...kernel.linkMap.keys()]).toEqual(['eth1']);
    expect(await store.all('parent')).toEqual([]);
    expect(await store.all('tombstone')).toEqual([]);
  });

  test('an existing subinterface is used as it is and never deleted', async () => {
    const { kernel, driver } = await setup();
    addNic(kernel, 'eth1');
    await kernel.apply([
      { op: 'vlan.add', name: 'eth1.20', parent: 'eth1', vlanId: 20 },
      { op: 'link.up', name: 'eth1.20' },
    ]);
    kernel.linkMap.get('eth1.20')!.owner = undefined;
    kernel.applied.length = 0;
    await driver.createNetwork(childReq('macvlan', 'eth1.20'));
    expect(kernel.applied).toEqual([]);
    expect(driver.state().parents).toEqual([expect.objectContaining({ link: 'eth1.20', owned: false })]);
    await driver.deleteNetwork(NID);
    await driver.drain();
    expect(kernel.linkMap.has('eth1.20')).toBe(true);
  });

  test('ownership belongs to the link: A creates it, B shares it, A goes (it stays), B goes (it is deleted)', async () => {
    const { store, kernel, driver } = await setupOn(childReq('macvlan', 'eth1.10', sub('10.1.0.0/24', NID)));
    await driver.createNetwork(childReq('macvlan', 'eth1.10', sub('10.2.0.0/24', NID2)));
    expect(kernel.applied.filter((c) => c.op === 'vlan.add')).toHaveLength(1);
    expect(await store.all('parent')).toEqual([expect.objectContaining({ link: 'eth1.10', owned: true, users: [NID, NID2] })]);
    await driver.deleteNetwork(NID);
    await driver.drain();
    expect(kernel.linkMap.has('eth1.10')).toBe(true);
    expect(await store.all('parent')).toEqual([expect.objectContaining({ owned: true, users: [NID2] })]);
    await driver.deleteNetwork(NID2);
    await driver.drain();
    expect(kernel.linkMap.has('eth1.10')).toBe(false);
    expect(kernel.linkMap.has('eth1')).toBe(true);
    expect(await store.all('parent')).toEqual([]);
  });

  test('a shared owned parent that went down is brought up for the next network', async () => {
    const { kernel, driver } = await setupOn(childReq('macvlan', 'eth1.10', sub('10.1.0.0/24', NID)));
    kernel.linkMap.get('eth1.10')!.up = false;
    await driver.createNetwork(childReq('macvlan', 'eth1.10', sub('10.2.0.0/24', NID2)));
    expect(kernel.linkMap.get('eth1.10')?.up).toBe(true);
  });

  test('a missing or down lower link is refused and nothing is made', async () => {
    const { store, kernel, driver } = await setup();
    let err = await expectCode(driver.createNetwork(childReq('macvlan', 'eth1.10')), 'TSN_INVALID_OPTION');
    expect(err.message).toBe('option parent="eth1.10" (mode=macvlan): the VLAN\'s lower link eth1 does not exist');
    addNic(kernel, 'eth1', { up: false });
    err = await expectCode(driver.createNetwork(childReq('macvlan', 'eth1.10')), 'TSN_INVALID_OPTION');
    expect(err.message).toMatch(/^option parent="eth1.10" \(mode=macvlan\): the VLAN's lower link eth1: the link is down/);
    expect(kernel.applied).toEqual([]);
    expect(await store.all('parent')).toEqual([]);
  });

  test('the same VLAN under another name is refused naming that link', async () => {
    const { kernel, driver } = await setup();
    addNic(kernel, 'eth1');
    await kernel.apply([{ op: 'vlan.add', name: 'vlan10', parent: 'eth1', vlanId: 10 }]);
    const err = await expectCode(driver.createNetwork(childReq('macvlan', 'eth1.10')), 'TSN_INVALID_OPTION');
    expect(err.message).toBe('option parent="eth1.10" (mode=macvlan): VLAN 10 of eth1 exists as vlan10; name that link as the parent');
  });

  test('a failure after the VLAN was made takes it and its record back; a shared parent is left as it was', async () => {
    const { store, kernel, driver } = await setup();
    addNic(kernel, 'eth1');
    kernel.failOn((c) => c.op === 'macvlan.add', 'injected');
    await expectCode(driver.createNetwork(childReq('macvlan', 'eth1.10', {}, { 'tsnet.host_shim': 'true' })), 'TSN_INVALID_OPTION');
    await expectCode(
      driver.createNetwork(
        childReq(
          'macvlan',
          'eth1.10',
          { ipv4: [{ addressSpace: 'x', pool: '10.1.0.0/24', auxAddresses: { host_shim: '10.1.0.2/24' } }] },
          { 'tsnet.host_shim': 'true' },
        ),
      ),
      'TSN_KERNEL',
    );
    expect(kernel.linkMap.has('eth1.10')).toBe(false);
    expect(await store.all('parent')).toEqual([]);
    expect(await store.all('network')).toEqual([]);
    await driver.createNetwork(childReq('macvlan', 'eth1.10', sub('10.1.0.0/24', NID)));
    kernel.failOn((c) => c.op === 'macvlan.add', 'injected');
    await expectCode(
      driver.createNetwork(
        childReq(
          'macvlan',
          'eth1.10',
          { networkId: NID2, ipv4: [{ addressSpace: 'x', pool: '10.2.0.0/24', auxAddresses: { host_shim: '10.2.0.2/24' } }] },
          { 'tsnet.host_shim': 'true' },
        ),
      ),
      'TSN_KERNEL',
    );
    expect(kernel.linkMap.has('eth1.10')).toBe(true);
    expect(await store.all('parent')).toEqual([expect.objectContaining({ link: 'eth1.10', users: [NID] })]);
    expect(driver.state().parents).toEqual([expect.objectContaining({ link: 'eth1.10', users: [NID] })]);
  });
});

describe('no parent: the network is internal on a dummy link tsnet owns', () => {
  test('tsdm-<id> is made and brought up, the network is internal (DisableGatewayService), the dummy goes with it', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(childReq('macvlan', undefined));
    expect(kernel.linkMap.get(DUMMY)).toMatchObject({ kind: 'dummy', up: true, owner: kernel.owner });
    expect((await store.all('network'))[0]).toMatchObject({ parent: DUMMY, parentSpec: { kind: 'dummy' }, internal: true });
    await endpoint(driver, EID, '192.168.10.5/24');
    expect(await join(driver, EID)).toEqual({ srcName: 'tsmbbbbbbbbbbbb', dstPrefix: 'eth', staticRoutes: [], disableGatewayService: true });
    await driver.leave(NID, EID);
    await driver.deleteEndpoint(NID, EID);
    await driver.deleteNetwork(NID);
    await driver.drain();
    expect(kernel.linkMap.size).toBe(0);
  });

  test('two parent-less networks each get their own dummy', async () => {
    const { kernel, driver } = await setup();
    await driver.createNetwork(childReq('macvlan', undefined));
    await driver.createNetwork(childReq('ipvlan', undefined, { networkId: NID2 }));
    expect([...kernel.linkMap.keys()].sort()).toEqual([DUMMY, 'tsdm-cccccccccc']);
  });
});

describe('parents across a restart', () => {
  test('owned VLAN and dummy parents that went missing are made again and brought up; their networks work on', async () => {
    const { store, kernel, driver } = await setupOn(childReq('macvlan', 'eth1.10'));
    await driver.createNetwork(childReq('macvlan', undefined, { networkId: NID2 }));
    await kernel.apply([
      { op: 'link.del', name: 'eth1.10' },
      { op: 'link.del', name: 'tsdm-cccccccccc' },
    ]);
    const restarted = await TsnetDriver.load(store, kernel);
    await restarted.reconcile();
    expect(kernel.linkMap.get('eth1.10')).toMatchObject({ kind: 'vlan', lower: 'eth1', vlanId: 10, up: true });
    expect(kernel.linkMap.get('tsdm-cccccccccc')).toMatchObject({ kind: 'dummy', up: true });
    await endpoint(restarted, EID, '192.168.10.5/24');
    await join(restarted, EID);
    expect(kernel.linkMap.get('tsmbbbbbbbbbbbb')?.lower).toBe('eth1.10');
  });

  test("a VLAN with this instance's tag that no parent record claims is swept; a foreign VLAN and owned parents stay", async () => {
    const { store, kernel } = await setupOn(childReq('macvlan', 'eth1.10'));
    // eth1.30: left by a crash after its network's removal was committed but before the link was deleted, tombstone lost.
    await kernel.apply([
      { op: 'vlan.add', name: 'eth1.30', parent: 'eth1', vlanId: 30 },
      { op: 'vlan.add', name: 'eth1.40', parent: 'eth1', vlanId: 40 },
      { op: 'dummy.add', name: 'tsdm-eeeeeeeeee' },
    ]);
    kernel.linkMap.get('eth1.40')!.owner = undefined;
    const restarted = await TsnetDriver.load(store, kernel);
    await restarted.reconcile();
    expect([...kernel.linkMap.keys()].sort()).toEqual(['eth1', 'eth1.10', 'eth1.40']);
  });

  test('the shared parent records survive a restart: the last network to go deletes the link', async () => {
    const { store, kernel, driver } = await setupOn(childReq('macvlan', 'eth1.10', sub('10.1.0.0/24', NID)));
    await driver.createNetwork(childReq('macvlan', 'eth1.10', sub('10.2.0.0/24', NID2)));
    const restarted = await TsnetDriver.load(store, kernel);
    await restarted.reconcile();
    await restarted.deleteNetwork(NID2);
    await restarted.drain();
    expect(kernel.linkMap.has('eth1.10')).toBe(true);
    await restarted.deleteNetwork(NID);
    await restarted.drain();
    expect(kernel.linkMap.has('eth1.10')).toBe(false);
  });
});

describe('checks across networks on one VLAN', () => {
  test('overlapping subnets on the same VLAN are refused; the same subnet on another VLAN of the same NIC is fine', async () => {
    const { kernel, driver } = await setupOn(childReq('macvlan', 'eth1.10'));
    const err = await expectCode(driver.createNetwork(childReq('macvlan', 'eth1.10', sub('192.168.10.0/25', NID2))), 'TSN_INVALID_OPTION');
    expect(err.message).toMatch(/^option parent="eth1.10" \(mode=macvlan\): subnet 192.168.10.0\/25 overlaps subnet 192.168.10.0\/24/);
    await driver.createNetwork(childReq('macvlan', 'eth1.20', sub('192.168.10.0/25', NID2)));
    expect(kernel.linkMap.get('eth1.20')).toMatchObject({ vlanId: 20 });
  });

  test('a macvlan and an ipvlan network cannot share a parent', async () => {
    const { driver } = await setupOn(childReq('macvlan', 'eth1.10'));
    const err = await expectCode(driver.createNetwork(childReq('ipvlan', 'eth1.10', sub('10.3.0.0/24', NID3))), 'TSN_INVALID_OPTION');
    expect(err.message).toBe(
      `option parent="eth1.10" (mode=ipvlan): macvlan network ${NID.slice(0, 12)} uses it, and a parent carries macvlan or ipvlan links, never both`,
    );
  });
});

describe('a VLAN on the parent of another network', () => {
  test('a NIC that carries one network can be the lower link of another network\'s VLAN, in either order', async () => {
    const { store, kernel, driver } = await setupOn(childReq('macvlan', 'eth1', sub('10.1.0.0/24', NID)));
    await driver.createNetwork(childReq('macvlan', 'eth1.10', sub('10.2.0.0/24', NID2)));
    expect(kernel.linkMap.get('eth1.10')).toMatchObject({ kind: 'vlan', lower: 'eth1', vlanId: 10, up: true });
    await driver.deleteNetwork(NID2);
    await driver.deleteNetwork(NID);
    await driver.createNetwork(childReq('macvlan', 'eth1.10', sub('10.2.0.0/24', NID2)));
    await driver.createNetwork(childReq('macvlan', 'eth1', sub('10.1.0.0/24', NID)));
    expect((await store.all('parent')).map((p) => [p.link, p.owned])).toEqual([
      ['eth1', false],
      ['eth1.10', true],
    ]);
  });

  test('a VLAN on a parent tsnet created is refused: that link goes with its last network, and the VLAN with it', async () => {
    const { store, kernel, driver } = await setupOn(childReq('macvlan', 'eth1.10', sub('10.1.0.0/24', NID)));
    kernel.applied.length = 0;
    const err = await expectCode(driver.createNetwork(childReq('macvlan', 'eth1.10.20', sub('10.2.0.0/24', NID2))), 'TSN_INVALID_OPTION');
    expect(err.message).toBe(
      `option parent="eth1.10.20" (mode=macvlan): the VLAN's lower link eth1.10 is a parent tsnet created for network ${NID.slice(0, 12)}, deleted with its last network`,
    );
    expect(kernel.applied).toEqual([]);
    expect((await store.all('parent')).map((p) => p.link)).toEqual(['eth1.10']);
  });
});

describe('an owned parent whose deletion failed', () => {
  test('the next network on it keeps it owned and drops its tombstone: a restart does not delete it, its last network does', async () => {
    const { store, kernel, driver } = await setupOn(childReq('macvlan', 'eth1.10', sub('10.1.0.0/24', NID)));
    kernel.failOn((c) => c.op === 'link.del' && c.name === 'eth1.10', 'RTNETLINK answers: Device or resource busy');
    await driver.deleteNetwork(NID);
    await driver.drain();
    expect(kernel.linkMap.has('eth1.10')).toBe(true);
    await driver.createNetwork(childReq('macvlan', 'eth1.10', sub('10.2.0.0/24', NID2)));
    expect(await store.all('parent')).toEqual([expect.objectContaining({ link: 'eth1.10', owned: true, users: [NID2] })]);
    expect(await store.all('tombstone')).toEqual([]);
    const restarted = await TsnetDriver.load(store, kernel);
    await restarted.reconcile();
    expect(kernel.linkMap.get('eth1.10')).toMatchObject({ kind: 'vlan', up: true });
    await restarted.deleteNetwork(NID2);
    await restarted.drain();
    expect([...kernel.linkMap.keys()]).toEqual(['eth1']);
  });
});

describe("another network's dummy", () => {
  test('is refused as a parent: each parent-less network has its own, internal one', async () => {
    const { store, kernel, driver } = await setup();
    await driver.createNetwork(childReq('macvlan', undefined));
    kernel.applied.length = 0;
    const err = await expectCode(driver.createNetwork(childReq('macvlan', DUMMY, sub('10.2.0.0/24', NID2))), 'TSN_INVALID_OPTION');
    expect(err.message).toBe(`option parent="${DUMMY}" (mode=macvlan): a dummy link tsnet generated cannot be a parent`);
    expect(kernel.applied).toEqual([]);
    expect(await store.all('parent')).toEqual([expect.objectContaining({ link: DUMMY, users: [NID] })]);
  });
});

describe('two networks on one owned VLAN, one going while the other comes', () => {
  test("CreateNetwork waits for the last user's queued deletion of the VLAN, then makes and owns it again", async () => {
    const { store, kernel, driver } = await setupOn(childReq('macvlan', 'eth1.10', sub('10.1.0.0/24', NID)));
    const deletion = kernel.pauseAt((c) => c.call === 'apply' && c.change.op === 'link.del' && c.change.name === 'eth1.10');
    await driver.deleteNetwork(NID);
    await deletion.reached;
    const created = driver.createNetwork(childReq('macvlan', 'eth1.10', sub('10.2.0.0/24', NID2)));
    deletion.release();
    await created;
    await driver.drain();
    expect(kernel.linkMap.get('eth1.10')).toMatchObject({ kind: 'vlan', up: true, owner: kernel.owner });
    expect(await store.all('parent')).toEqual([expect.objectContaining({ link: 'eth1.10', owned: true, users: [NID2] })]);
    expect(await store.all('tombstone')).toEqual([]);
  });

  test('DeleteNetwork of the first user waits for a CreateNetwork sharing the VLAN: the VLAN stays for the second', async () => {
    const { store, kernel, driver } = await setupOn(childReq('macvlan', 'eth1.10', sub('10.1.0.0/24', NID)));
    // The second create holds while it reads the host (its parent checks).
    const lookup = kernel.pauseAt((c) => c.call === 'links');
    const created = driver.createNetwork(childReq('macvlan', 'eth1.10', sub('10.2.0.0/24', NID2)));
    await lookup.reached;
    const deleted = driver.deleteNetwork(NID);
    lookup.release();
    await Promise.all([created, deleted]);
    await driver.drain();
    expect(kernel.linkMap.get('eth1.10')).toMatchObject({ kind: 'vlan', up: true });
    expect(await store.all('parent')).toEqual([expect.objectContaining({ link: 'eth1.10', owned: true, users: [NID2] })]);
  });
});
