/** Aborting on SIGINT/SIGTERM: the current step finishes, then `finally` tears everything down. */

let abortSignal: string | undefined;
export function checkAborted(): void {
  if (abortSignal) throw new Error(`aborted by ${abortSignal}`);
}
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (abortSignal) process.exit(130); // second signal: exit handlers still kill daemons and remove temp dirs
    abortSignal = sig;
    console.error(`\n${sig}: finishing the current step, then tearing down (send again to exit at once)`);
  });
}

/** The signal that asked the bench to stop, if one did. */
export function abortedBy(): string | undefined {
  return abortSignal;
}
