import { Lifecycle } from '../../src/lifecycle';
import { captureLogs } from '../harness/logs';

/** Components that record what happens to them, in one shared journal. */
function recorder() {
  const journal: string[] = [];
  const component = (name: string, opts: { failStart?: boolean; failStop?: boolean; held?: Promise<void> } = {}) => ({
    name,
    start: async () => {
      journal.push(`start ${name}`);
      if (opts.held) await opts.held;
      if (opts.failStart) throw new Error(`${name} broke`);
      return {
        stop: () => {
          journal.push(`stop ${name}`);
          if (opts.failStop) throw new Error(`${name} would not stop`);
        },
        reload: async () => {
          journal.push(`reload ${name}`);
        },
      };
    },
  });
  return { journal, component };
}

let logs: { lines: string[]; restore: () => void };
beforeEach(() => (logs = captureLogs('info')));
afterEach(() => logs.restore());

const entries = () => logs.lines.map((l) => JSON.parse(l) as { message: string; component?: string; ms?: number; error?: string });

test('components start in the declared order and stop in reverse, each timed in the log', async () => {
  const r = recorder();
  let now = 0;
  const lc = new Lifecycle(() => (now += 5));
  lc.add(r.component('store')).add(r.component('server')).add({ name: 'nothing to stop', start: () => undefined }).add(r.component('dns'));
  expect(await lc.start()).toBe(true);
  expect(await lc.stop()).toBe(true);
  expect(r.journal).toEqual(['start store', 'start server', 'start dns', 'stop dns', 'stop server', 'stop store']);
  const timed = entries().filter((e) => e.message.startsWith('component'));
  expect(timed.map((e) => `${e.message} ${e.component}`)).toEqual([
    'component started store',
    'component started server',
    'component started nothing to stop',
    'component started dns',
    'component stopped dns',
    'component stopped nothing to stop',
    'component stopped server',
    'component stopped store',
  ]);
  expect(timed.every((e) => e.ms === 5)).toBe(true);
});

test('a failing start stops what started, in reverse, and the error names the component', async () => {
  const r = recorder();
  const lc = new Lifecycle().add(r.component('store')).add(r.component('server')).add(r.component('reconcile', { failStart: true })).add(r.component('dns'));
  await expect(lc.start()).rejects.toThrow('starting reconcile failed');
  expect(r.journal).toEqual(['start store', 'start server', 'start reconcile', 'stop server', 'stop store']);
  expect(entries().find((e) => e.message === 'component failed to start')).toMatchObject({ component: 'reconcile', error: 'reconcile broke' });
});

test('a stop that fails is logged, the others still stop, and the result says it was not clean', async () => {
  const r = recorder();
  const lc = new Lifecycle().add(r.component('store')).add(r.component('server', { failStop: true })).add(r.component('dns'));
  await lc.start();
  expect(await lc.stop()).toBe(false);
  expect(r.journal.slice(3)).toEqual(['stop dns', 'stop server', 'stop store']);
  expect(entries().find((e) => e.message === 'component failed to stop')).toMatchObject({ component: 'server' });
  // Stopping again is the same stop: nothing runs twice.
  expect(await lc.stop()).toBe(false);
  expect(r.journal).toHaveLength(6);
});

test('a stop during start waits for the component starting, stops it too, and starts nothing after it', async () => {
  const r = recorder();
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const lc = new Lifecycle().add(r.component('store')).add(r.component('reconcile', { held })).add(r.component('dns'));
  const starting = lc.start();
  await new Promise((resolve) => setImmediate(resolve));
  const stopping = lc.stop();
  release();
  expect(await starting).toBe(false);
  expect(await stopping).toBe(true);
  expect(r.journal).toEqual(['start store', 'start reconcile', 'stop reconcile', 'stop store']);
});

test('reload reaches the started components that can reload, in start order; one failing does not stop the rest', async () => {
  const r = recorder();
  const lc = new Lifecycle()
    .add(r.component('store'))
    .add({ name: 'watcher', start: () => ({ reload: () => Promise.reject(new Error('nft missing')) }) })
    .add({ name: 'plain', start: () => () => undefined })
    .add(r.component('dns'));
  await lc.start();
  await lc.reload();
  expect(r.journal.filter((j) => j.startsWith('reload'))).toEqual(['reload store', 'reload dns']);
  expect(entries().find((e) => e.message === 'component failed to reload')).toMatchObject({ component: 'watcher', error: 'nft missing' });
  await lc.stop();
  await lc.reload();
  expect(r.journal.filter((j) => j.startsWith('reload'))).toHaveLength(2);
});
