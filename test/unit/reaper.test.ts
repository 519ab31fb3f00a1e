import { LinkReaper } from '../../src/driver/reaper';
import type { KernelChange } from '../../src/kernel/contract';
import { FakeKernel } from '../../src/kernel/fake';
import { SqliteStore } from '../../src/store/sqlite';

/** A fake kernel whose changes take real time, like netdev unregistration. */
class SlowKernel extends FakeKernel {
  override async apply(changes: KernelChange[]): Promise<void> {
    await new Promise((r) => setTimeout(r, 5));
    return super.apply(changes);
  }
}

async function setup(n: number) {
  const store = new SqliteStore(':memory:');
  const kernel = new SlowKernel();
  const names = Array.from({ length: n }, (_, i) => `tsv${String(i).padStart(12, '0')}`);
  for (let i = 0; i < n; i++) await kernel.apply([{ op: 'bridge.add', name: names[i] }]);
  await store.commit(LinkReaper.tombstones(names));
  return { store, kernel, reaper: new LinkReaper(kernel, store), names };
}

test('scheduled links are deleted in chunks and their tombstones dropped', async () => {
  const { store, kernel, reaper, names } = await setup(70);
  reaper.schedule(names);
  await reaper.flush();
  expect(kernel.linkMap.size).toBe(0);
  expect(await store.all('tombstone')).toEqual([]);
});

test('stop within its grace time finishes every pending deletion', async () => {
  const { store, kernel, reaper, names } = await setup(100);
  reaper.schedule(names);
  await reaper.stop();
  expect(kernel.linkMap.size).toBe(0);
  expect(await store.all('tombstone')).toEqual([]);
});

test('stop past its grace time finishes the chunk in progress and leaves the rest to the tombstones', async () => {
  const { store, kernel, reaper, names } = await setup(100);
  reaper.schedule(names);
  await reaper.stop(0);
  expect(kernel.linkMap.size).toBe(100 - 32);
  expect(await store.all('tombstone')).toHaveLength(100 - 32);
  reaper.schedule(['tsvx']);
  await reaper.flush();
  expect(kernel.linkMap.size).toBe(100 - 32);
});

test('a job runs after the links pending when it was scheduled', async () => {
  const { reaper, kernel, names } = await setup(3);
  const order: string[] = [];
  reaper.schedule(names);
  reaper.scheduleJob('after', () => {
    order.push(`job saw ${kernel.linkMap.size} links`);
    return Promise.resolve();
  });
  await reaper.flush();
  expect(order).toEqual(['job saw 0 links']);
});

test('stop still runs pending jobs (they restore the ruleset and have no tombstone)', async () => {
  const { reaper, names } = await setup(40);
  let ran = false;
  reaper.schedule(names);
  reaper.scheduleJob('remove firewall base', () => {
    ran = true;
    return Promise.resolve();
  });
  await reaper.stop(0);
  expect(ran).toBe(true);
});
