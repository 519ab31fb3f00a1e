import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { lockStateDir, processStartTime } from '../../src/state-lock';

/** The state-directory lock: one tsnet per state dir; a crashed holder (or a reused pid) does not block a restart. */
let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-lock-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const lockFile = () => path.join(dir, 'tsnet.lock');
/** A pid that is certainly not running: a child that has exited and been reaped. */
const deadPid = () => spawnSync(process.execPath, ['-e', '0']).pid;

test('the lock names its holder; a second lock on the same dir fails naming the holder’s pid, and release frees it', () => {
  const lock = lockStateDir(dir);
  expect(fs.readFileSync(lockFile(), 'utf8')).toMatch(new RegExp(`^${process.pid} `));
  expect(() => lockStateDir(dir)).toThrow(new RegExp(`state directory ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is in use by tsnet pid ${process.pid}`));
  expect(fs.readFileSync(lockFile(), 'utf8')).toMatch(new RegExp(`^${process.pid} `));
  lock.release();
  expect(fs.existsSync(lockFile())).toBe(false);
  lockStateDir(dir).release();
});

test('a lock left by a crashed holder is taken over', () => {
  fs.writeFileSync(lockFile(), `${deadPid()} 12345\n`);
  const lock = lockStateDir(dir);
  expect(fs.readFileSync(lockFile(), 'utf8')).toMatch(new RegExp(`^${process.pid} `));
  lock.release();
});

test('a lock whose pid now belongs to another process (different start time) is taken over', () => {
  fs.writeFileSync(lockFile(), `${process.pid} ${processStartTime(process.pid)! + 1}\n`);
  lockStateDir(dir).release();
});

test('a lock file that is not a lock (garbage) is refused, not deleted', () => {
  fs.writeFileSync(lockFile(), 'hello');
  expect(() => lockStateDir(dir)).toThrow(/tsnet\.lock/);
  expect(fs.readFileSync(lockFile(), 'utf8')).toBe('hello');
});

test('release leaves a lock that is no longer ours alone', () => {
  const lock = lockStateDir(dir);
  fs.writeFileSync(lockFile(), `1 ${processStartTime(1)}\n`);
  lock.release();
  expect(fs.existsSync(lockFile())).toBe(true);
});

test('the state dir is created if missing, owner-only', () => {
  const sub = path.join(dir, 'a', 'b');
  lockStateDir(sub).release();
  expect(fs.statSync(sub).mode & 0o777).toBe(0o700);
});
