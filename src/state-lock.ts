import fs from 'node:fs';
import path from 'node:path';
import { errnoCode, tsnetError } from './errors';

/**
 * One tsnet per state directory: `<dir>/tsnet.lock` holds "<pid> <start time>" of the holder. Node has no flock, so
 * the file is created atomically (written under a private name, then hard-linked into place, which fails if a lock
 * exists), and a lock is stale when its pid is gone or now names another process (a different start time, so a
 * reused pid is not mistaken for the holder). A stale lock is taken over; a live one is refused, naming the pid.
 */
export interface StateLock {
  release(): void;
}

interface Holder {
  pid: number;
  start: number;
}

/** Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat); undefined if it is gone. */
export function processStartTime(pid: number): number | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const start = Number(fields[19]);
  return Number.isFinite(start) ? start : undefined;
}

const text = (h: Holder) => `${h.pid} ${h.start}\n`;

function readHolder(file: string): Holder | 'garbage' | undefined {
  let content: string;
  try {
    content = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
  const m = /^(\d+) (\d+)\n$/.exec(content);
  return m ? { pid: Number(m[1]), start: Number(m[2]) } : 'garbage';
}

const alive = (h: Holder) => processStartTime(h.pid) === h.start;

/** Creates the lock file atomically; false if one exists. */
function create(file: string, me: Holder): boolean {
  const tmp = `${file}.${me.pid}`;
  fs.writeFileSync(tmp, text(me), { mode: 0o644 });
  try {
    fs.linkSync(tmp, file);
    return true;
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') return false;
    throw err;
  } finally {
    fs.unlinkSync(tmp);
  }
}

/**
 * Removes a stale lock unless it changed since it was read: it is renamed away first (only one contender can), and
 * put back if what was renamed is not the stale lock after all.
 */
function removeStale(file: string, stale: Holder, me: Holder): void {
  const aside = `${file}.stale.${me.pid}`;
  try {
    fs.renameSync(file, aside);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return; // another contender removed it
    throw err;
  }
  const moved = readHolder(aside);
  if (moved !== 'garbage' && moved !== undefined && moved.pid === stale.pid && moved.start === stale.start) {
    fs.unlinkSync(aside);
    return;
  }
  try {
    fs.linkSync(aside, file);
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') throw err;
  } finally {
    fs.unlinkSync(aside);
  }
}

/** Takes the lock on `dir` (created owner-only if missing), or throws TSN_STATE_LOCKED naming the holder. */
export function lockStateDir(dir: string): StateLock {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, 'tsnet.lock');
  const me: Holder = { pid: process.pid, start: processStartTime(process.pid) ?? 0 };
  for (let attempt = 0; attempt < 5; attempt++) {
    if (create(file, me)) {
      return {
        release: () => {
          const h = readHolder(file);
          if (h !== undefined && h !== 'garbage' && h.pid === me.pid && h.start === me.start) fs.unlinkSync(file);
        },
      };
    }
    const holder = readHolder(file);
    if (holder === 'garbage') throw tsnetError('TSN_STATE_LOCKED', `${file} exists but is not a tsnet lock; remove it if no tsnet uses ${dir}`);
    if (holder === undefined) continue;
    if (alive(holder)) throw tsnetError('TSN_STATE_LOCKED', `state directory ${dir} is in use by tsnet pid ${holder.pid} (${file})`);
    removeStale(file, holder, me);
  }
  throw tsnetError('TSN_STATE_LOCKED', `could not take ${file}: other tsnet processes keep taking it`);
}
