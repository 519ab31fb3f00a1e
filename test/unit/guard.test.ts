import { installProcessGuard } from '../../src/guard';
import { captureLogs } from '../harness/logs';

/** The process-level guard: a stray rejection or exception is logged (bounded) and the process keeps serving. */
let logged: string[];
let restoreLogs: () => void;
let uninstall: () => void;

beforeEach(() => {
  ({ lines: logged, restore: restoreLogs } = captureLogs());
  uninstall = installProcessGuard();
});

afterEach(() => {
  uninstall();
  restoreLogs();
});

/** Jest handles real unhandled rejections itself, so the events are emitted as Node would emit them. */
const emit = (process.emit as (event: string, ...args: unknown[]) => boolean).bind(process);

test('an unhandled rejection is logged with a bounded excerpt and does not end the process', () => {
  const deep: unknown[] = [];
  let cur = deep;
  for (let i = 0; i < 5000; i++) cur.push((cur = []));
  emit('unhandledRejection', deep, Promise.resolve());
  emit('unhandledRejection', new Error('y'.repeat(10_000)), Promise.resolve());
  const lines = logged.filter((l) => l.includes('unhandled rejection'));
  expect(lines).toHaveLength(2);
  for (const l of lines) expect(l.length).toBeLessThan(2_000);
});

test('an uncaught exception is logged and the process keeps running', () => {
  emit('uncaughtException', new Error('boom'), 'uncaughtException');
  expect(logged.some((l) => l.includes('uncaught exception') && l.includes('boom'))).toBe(true);
});

test('uninstall removes exactly the guard’s listeners', () => {
  const before = [process.listenerCount('unhandledRejection'), process.listenerCount('uncaughtException')];
  const again = installProcessGuard();
  again();
  expect([process.listenerCount('unhandledRejection'), process.listenerCount('uncaughtException')]).toEqual(before);
});
