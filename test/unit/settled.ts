/**
 * Whether `p` has settled once everything already queued has run (a reply over a socket needs several I/O turns):
 * for checks that a call is still held, not for timing.
 */
export async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setTimeout(r, 50));
  return done;
}
