/** Progress lines on stderr, and a count of other dockerds seen meanwhile (parallel test runs disturb the numbers). */
import fs from 'node:fs';

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
