/** Serialises async work per key (a network id): kernel steps of one network never interleave. */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    // Settles when `next` does and never rejects; the last holder of the key removes it.
    const release = (): void => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };
    const tail = next.then(release, release);
    this.tails.set(key, tail);
    return next;
  }
}

/** Serialises async work in one lane (a driver-wide lock). */
export class Mutex {
  private readonly lane = new KeyedMutex();

  run<T>(fn: () => Promise<T>): Promise<T> {
    return this.lane.run('', fn);
  }
}
