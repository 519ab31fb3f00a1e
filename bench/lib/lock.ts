/** The host-wide lock the e2e runs take (`flock /tmp/tsnet-dockerd.lock`), held by a bench for chosen phases only. */
import fs from 'node:fs';
import path from 'node:path';
import { isRunning, onProcessExit, spawnDaemon, waitFor, waitForExit } from '../../test/harness/exec';
import { checkAborted } from './abort';
import { REPO } from './config';

export const DOCKERD_LOCK = '/tmp/tsnet-dockerd.lock';

/** A phase never holds the lock longer than this, even if the bench is killed mid-phase and its `sleep` orphaned. */
const MAX_HOLD_S = 3600;

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    // gone already
  }
}

/**
 * Waits (up to `timeoutMs`) for the lock and holds it until the returned release is called. `flock -o` holds it in
 * its own process (not in the command) while its command, a `sleep`, runs: ending the sleep ends flock and frees the
 * lock; so does the exit handler killing flock when the bench dies.
 */
export async function holdDockerdLock(what: string, timeoutMs = 30 * 60_000): Promise<() => Promise<void>> {
  const marker = path.join(REPO, '.tmp', `lock-${process.pid}-${Date.now()}.log`);
  const child = spawnDaemon('flock', ['-o', DOCKERD_LOCK, 'sh', '-c', `echo locked $$; exec sleep ${MAX_HOLD_S}`], { logFile: marker });
  let sleepPid: number | undefined;
  const unregister = onProcessExit(() => {
    if (sleepPid !== undefined) killQuietly(sleepPid);
  });
  try {
    await waitFor(
      () => {
        // Ctrl-C while waiting, or a flock killed by someone else, ends the wait at once.
        checkAborted();
        const m = /locked (\d+)/.exec(fs.readFileSync(marker, 'utf8'));
        if (!m && !isRunning(child)) throw new Error(`flock on ${DOCKERD_LOCK} exited (code ${child.exitCode}, signal ${child.signalCode}) without the lock (${what})`);
        if (m) sleepPid = Number(m[1]);
        return sleepPid !== undefined;
      },
      timeoutMs,
      () => `${DOCKERD_LOCK} not free after ${timeoutMs} ms (${what})`,
      200,
    );
  } catch (err) {
    child.kill('SIGKILL');
    unregister();
    throw err;
  } finally {
    fs.rmSync(marker, { force: true });
  }
  return async () => {
    if (sleepPid !== undefined) killQuietly(sleepPid);
    await waitForExit(child, 5_000);
    unregister();
  };
}
