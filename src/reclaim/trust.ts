/**
 * First-use trust, promised at start: a tsnet whose store holds nothing and trusts no daemon yet will trust the first
 * Docker daemon it reads. Without the promise, a crash during its very first create (before that read) left a
 * network or pool dockerd never learnt of, which no read could then decide (Docker knows none of tsnet's networks).
 */
import { put, type Store } from '../store/contract';

/** Commits the promise when tsnet holds nothing and no trust record exists; before any plugin call is served. */
export async function promiseFirstUse(store: Store, holdsNothing: boolean): Promise<void> {
  if (!holdsNothing || (await store.all('trust')).length > 0) return;
  await store.commit([put('trust', 'docker', { daemonId: '', evidence: 'first-use', since: new Date().toISOString() })]);
}
