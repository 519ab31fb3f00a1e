import { LinkWatcher, monitorLinkName } from '../../src/kernel/link-watch';
import { StubMonitor } from './monitor-fixtures';

const line = (name: string, deleted = false) => `${deleted ? 'Deleted ' : ''}186: ${name}: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN group default \\    link/ether 1a:76:d2:1c:d5:0e brd ff:ff:ff:ff:ff:ff\n`;

function setup() {
  const monitors: StubMonitor[] = [];
  let calls = 0;
  let release: (() => void) | undefined;
  const watcher = new LinkWatcher(
    () => {
      calls++;
      return new Promise<void>((resolve) => (release = resolve));
    },
    { debounceMs: 100, restartMs: 1000, spawnMonitor: () => { const m = new StubMonitor(); monitors.push(m); return m; } },
  );
  return { watcher, monitors, calls: () => calls, finish: async () => { release?.(); await Promise.resolve(); await Promise.resolve(); } };
}

beforeEach(() => jest.useFakeTimers());
afterEach(() => jest.useRealTimers());

test('monitor lines give the link name (added, deleted, veth with peer)', () => {
  expect(monitorLinkName(line('br-0123456789ab'))).toBe('br-0123456789ab');
  expect(monitorLinkName(line('docker0', true))).toBe('docker0');
  expect(monitorLinkName('188: h3va@h3vb: <BROADCAST,MULTICAST,M-DOWN> mtu 1500')).toBe('h3va');
  expect(monitorLinkName('    link/ether aa:bb')).toBeUndefined();
});

test('events naming Docker-style bridges are debounced into one update; other links cause none', async () => {
  const t = setup();
  t.watcher.start();
  t.monitors[0].write(line('tsv0123456789ab') + line('br-lan') + line('eth0'));
  jest.advanceTimersByTime(500);
  expect(t.calls()).toBe(0);
  // One event split over two chunks, then a deletion: one update after the quiet period.
  const l = line('br-0123456789ab');
  t.monitors[0].write(l.slice(0, 10));
  t.monitors[0].write(l.slice(10) + line('docker0', true));
  jest.advanceTimersByTime(99);
  expect(t.calls()).toBe(0);
  jest.advanceTimersByTime(1);
  expect(t.calls()).toBe(1);
  t.watcher.stop();
});

test('events during an update cause exactly one more update after it', async () => {
  const t = setup();
  t.watcher.start();
  t.monitors[0].write(line('docker0'));
  jest.advanceTimersByTime(100);
  expect(t.calls()).toBe(1);
  t.monitors[0].write(line('br-aaaaaaaaaaaa'));
  jest.advanceTimersByTime(100);
  t.monitors[0].write(line('br-bbbbbbbbbbbb'));
  jest.advanceTimersByTime(100);
  expect(t.calls()).toBe(1);
  await t.finish();
  expect(t.calls()).toBe(2);
  await t.finish();
  expect(t.calls()).toBe(2);
  t.watcher.stop();
});

test('a monitor that dies is restarted and the bridges re-read; stop kills it and restarts nothing', async () => {
  const t = setup();
  t.watcher.start();
  t.monitors[0].emit('exit');
  jest.advanceTimersByTime(999);
  expect(t.monitors).toHaveLength(1);
  jest.advanceTimersByTime(1);
  expect(t.monitors).toHaveLength(2);
  expect(t.calls()).toBe(1);
  t.watcher.stop();
  expect(t.monitors[1].killed).toBe(true);
  t.monitors[1].emit('exit');
  jest.advanceTimersByTime(5000);
  expect(t.monitors).toHaveLength(2);
});
