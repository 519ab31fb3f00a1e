/**
 * Plugin calls in flight and shutdown's refusal of new ones. Free of express, zod and winston: the socket serves the
 * handshake through it before those are loaded (src/protocol/early.ts).
 */

export const SHUTTING_DOWN = 'tsnet is shutting down';

/**
 * Counts the plugin calls in flight, so shutdown can refuse new ones and wait for the rest. A call leaves when its
 * reply is written (or its connection dies), not when its handler returns.
 */
export class CallGate {
  private closed = false;
  private inFlight = 0;
  private idle: Array<() => void> = [];

  /** False once closed: the caller answers {@link SHUTTING_DOWN}. */
  enter(): boolean {
    if (this.closed) return false;
    this.inFlight++;
    return true;
  }

  leave(): void {
    this.inFlight--;
    if (this.inFlight === 0) for (const wake of this.idle.splice(0)) wake();
  }

  get active(): number {
    return this.inFlight;
  }

  /** From now on every call is refused; resolves when none is in flight (at once if none is). */
  close(): Promise<void> {
    this.closed = true;
    return this.inFlight === 0 ? Promise.resolve() : new Promise((resolve) => this.idle.push(resolve));
  }
}

/**
 * Shutdown of plugin calls: new ones are refused at once, those in flight get up to `graceMs` to finish. Resolves
 * with the number still running when the grace ran out (cut off when the socket closes).
 */
export async function drain(gate: CallGate, graceMs: number): Promise<number> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
  await Promise.race([gate.close(), expired]);
  clearTimeout(timer);
  return gate.active;
}
