import type { CollectionName, Collections } from './records';

/** Writing one record; `put` keeps collection and value types together where ops are made. */
export interface PutOp<C extends CollectionName = CollectionName> {
  kind: 'put';
  collection: C;
  key: string;
  value: Collections[C];
}

/** One change in a commit. */
export type StoreOp = PutOp | { kind: 'delete'; collection: CollectionName; key: string };

/**
 * The state store. Callers keep their working state in memory, loaded once at start with {@link Store.all}, and
 * persist every mutation with one {@link Store.commit} before they answer dockerd. The embedded backend is SQLite;
 * a later etcd backend implements the same contract (commit becomes one etcd transaction).
 */
export interface Store {
  /** Every record of a collection. */
  all<C extends CollectionName>(collection: C): Promise<Array<Collections[C]>>;
  /** Applies all ops atomically and durably, or none (throws TSN_STORE). */
  commit(ops: StoreOp[]): Promise<void>;
  close(): Promise<void>;
}

export function put<C extends CollectionName>(collection: C, key: string, value: Collections[C]): PutOp<C> {
  return { kind: 'put', collection, key, value };
}

export function del(collection: CollectionName, key: string): StoreOp {
  return { kind: 'delete', collection, key };
}
