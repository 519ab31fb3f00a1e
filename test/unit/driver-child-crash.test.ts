import { TsnetDriver } from '../../src/driver/driver';
import { FakeKernel } from '../../src/kernel/fake';
import { SqliteStore } from '../../src/store/sqlite';
import { EID, NID, NID2, dying } from './driver-fixtures';
import { addNic, childReq, endpoint, join } from './child-fixtures';

/**
 * A kill at any point of a child-link network's life: the lifecycle below is held for good at its k-th kernel batch or
 * store commit (held before it runs; the reaper's included), a new driver loads the same store and kernel
 * (the restart) and reconciles; then dockerd's own clean-up replays. After the restart the kernel holds exactly what
 * the records claim, and after the clean-up nothing tsnet made is left, while the NIC never goes.
 */

const SHIM = 'tshs-aaaaaaaaaa';
const settle = () => new Promise<void>((r) => setImmediate(r));

/** A shim network on a VLAN tsnet makes, a second network sharing it, an endpoint joined and taken down again. */
async function lifecycle(driver: TsnetDriver): Promise<void> {
  const aux = (pool: string, shim: string) => ({ ipv4: [{ addressSpace: 'LocalDefault', pool, gateway: `${pool.slice(0, -4)}1/24`, auxAddresses: { host_shim: `${shim}/24` } }] });
  await driver.createNetwork(childReq('macvlan', 'eth1.10', aux('192.168.10.0/24', '192.168.10.250'), { 'tsnet.host_shim': 'true' }));
  await driver.createNetwork(childReq('macvlan', 'eth1.10', { networkId: NID2, ipv4: [{ addressSpace: 'x', pool: '10.2.0.0/24', auxAddresses: {} }] }));
  await endpoint(driver, EID, '192.168.10.5/24');
  await join(driver, EID);
  await driver.leave(NID, EID);
  await driver.deleteEndpoint(NID, EID);
  await driver.deleteNetwork(NID);
  await driver.deleteNetwork(NID2);
  await driver.drain();
}

/**
 * A host with eth1 and a driver whose kernel batches and store commits count as kill points: the one numbered
 * `killAt` never returns (the process died there). `points()` says how many were passed.
 */
async function host(killAt = Infinity) {
  const store = new SqliteStore(':memory:');
  const kernel = new FakeKernel();
  addNic(kernel, 'eth1');
  const d = dying(store, kernel, killAt);
  const driver = await TsnetDriver.load(d.store, d.kernel);
  return { store, kernel, driver, points: d.points, dead: d.dead };
}

/** Kill points of the whole lifecycle when nothing stops it. */
const POINTS = 23;

test('the lifecycle passes the kill points the kills below cover', async () => {
  const { driver, points } = await host();
  await lifecycle(driver);
  expect(points()).toBe(POINTS);
});

test.each(Array.from({ length: POINTS }, (_, k) => k))('killed at point %i: the restart agrees with the store, the clean-up leaves only the NIC', async (k) => {
  const { store, kernel, driver, dead } = await host(k);
  void lifecycle(driver).catch(() => undefined);
  while (!dead()) await settle();

  const restarted = await TsnetDriver.load(store, kernel);
  await restarted.reconcile();
  await restarted.drain();
  const { networks, endpoints, parents } = restarted.state();
  // Exactly what the records claim carries the owner tag (a joined endpoint's link may be in the host namespace).
  const claimed = new Set([
    ...parents.filter((p) => p.owned).map((p) => p.link),
    ...networks.flatMap((n) => (n.mode === 'macvlan' && n.shim ? [n.shim.link] : [])),
    ...endpoints.flatMap((e) => (e.sandboxKey && e.mode !== 'bridge' ? [e.link] : [])),
  ]);
  const tagged = [...kernel.linkMap.values()].filter((l) => l.owner === kernel.owner).map((l) => l.name);
  for (const l of tagged) expect({ link: l, claimed: claimed.has(l) }).toEqual({ link: l, claimed: true });
  for (const p of parents.filter((p) => p.owned)) expect(kernel.linkMap.get(p.link)).toMatchObject({ up: true });
  for (const n of networks) if (n.mode === 'macvlan' && n.shim) expect(kernel.linkMap.get(SHIM)).toMatchObject({ up: true, addresses: n.shim.addresses });
  for (const e of endpoints) if (networks.find((n) => n.id === e.networkId && n.mode === 'macvlan' && n.shim)) expect(kernel.routeTable).toContainEqual({ dst: '192.168.10.5/32', dev: SHIM });
  expect(await store.all('tombstone')).toEqual([]);

  // dockerd's clean-up: Leave and DeleteEndpoint of what it had, then the networks go (every call idempotent).
  await restarted.leave(NID, EID);
  await restarted.deleteEndpoint(NID, EID);
  await restarted.deleteNetwork(NID);
  await restarted.deleteNetwork(NID2);
  await restarted.drain();
  expect([...kernel.linkMap.keys()]).toEqual(['eth1']);
  expect(kernel.routeTable).toEqual([]);
  expect(await store.all('parent')).toEqual([]);
  expect(await store.all('network')).toEqual([]);
  expect(await store.all('endpoint')).toEqual([]);
  expect(await store.all('tombstone')).toEqual([]);
});
