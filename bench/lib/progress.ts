/** Progress lines on stderr, and a count of other dockerds seen meanwhile (parallel test runs disturb the numbers). */
import fs from 'node:fs';
import path from 'node:path';

let ownDockerdPid: number | undefined;
let otherDockerdSeen = 0;

function countOtherDockerd(): void {
  let n = 0;
  for (const pid of fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      if (fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'dockerd' && Number(pid) !== ownDockerdPid) n++;
    } catch {
      // exited meanwhile
    }
  }
  otherDockerdSeen = Math.max(otherDockerdSeen, n);
}

export function progress(msg: string): void {
  countOtherDockerd();
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/** The bench's own dockerd, which the count leaves out. */
export function setOwnDockerd(pid: number | undefined): void {
  ownDockerdPid = pid;
}

/** The most other dockerd processes seen at any progress line. */
export function otherDockerdsSeen(): number {
  return otherDockerdSeen;
}

/** What every bench run records about itself, filled in once its teardown is done. */
export interface RunFacts {
  durationS: number;
  otherDockerdSeen: number;
}

/**
 * Runs the measurements, then the teardown whatever happened (its steps report their own errors); the results with
 * the run's duration since `t0` (teardown included) and the other dockerds seen, or undefined after reporting the
 * failure and setting a failing exit code.
 */
export async function measureThenTearDown<T extends RunFacts>(
  t0: number,
  measure: () => Promise<T>,
  teardown: () => Promise<string[]>,
): Promise<T | undefined> {
  let results: T | undefined;
  let failure: unknown;
  try {
    results = await measure();
  } catch (err) {
    failure = err;
  } finally {
    progress('tearing down');
    const errors = await teardown();
    if (errors.length > 0) {
      console.error(`teardown problems:\n  ${errors.join('\n  ')}`);
      failure ??= new Error('teardown failed');
    }
  }
  if (failure !== undefined || results === undefined) {
    console.error(`bench failed: ${failure instanceof Error ? (failure.stack ?? failure.message) : String(failure)}`);
    process.exitCode = 1;
    return undefined;
  }
  results.durationS = (performance.now() - t0) / 1000;
  results.otherDockerdSeen = otherDockerdSeen;
  return results;
}

/** `<base>.json` (every figure) and `<base>.md`. */
export function saveResults(base: string, results: unknown, md: string): void {
  fs.mkdirSync(path.dirname(base), { recursive: true });
  fs.writeFileSync(`${base}.json`, JSON.stringify(results, null, 2) + '\n');
  fs.writeFileSync(`${base}.md`, md);
}
