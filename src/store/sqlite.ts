import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { tsnetError } from '../errors';
import { log } from '../log';
import { elapsed, emit } from '../telemetry/hook';
import type { Store, StoreOp } from './contract';
import type { CollectionName, Collections } from './records';
import { migrate } from './migrations';

/**
 * Embedded store: SQLite in WAL mode with synchronous=FULL, so a commit that returned survives a crash of tsnet
 * or of the host. Records are JSON values keyed by (collection, key); the schema is versioned (migrations.ts).
 * Pass ':memory:' for unit tests.
 */
export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly upsert: Database.Statement;
  private readonly remove: Database.Statement;
  private readonly selectAll: Database.Statement<[CollectionName], { value: string }>;
  private readonly commitTx: (ops: StoreOp[]) => void;

  constructor(file: string) {
    if (file !== ':memory:') fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    try {
      this.db = new Database(file);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
      this.db.pragma('busy_timeout = 5000');
      migrate(this.db);
    } catch (err) {
      throw tsnetError('TSN_STORE', `cannot open state store ${file}`, err);
    }
    this.upsert = this.db.prepare(
      'INSERT INTO records (collection, key, value) VALUES (?, ?, ?) ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value',
    );
    this.remove = this.db.prepare('DELETE FROM records WHERE collection = ? AND key = ?');
    this.selectAll = this.db.prepare('SELECT value FROM records WHERE collection = ? ORDER BY key');
    this.commitTx = this.db.transaction((ops: StoreOp[]) => {
      for (const op of ops) {
        if (op.kind === 'put') this.upsert.run(op.collection, op.key, JSON.stringify(op.value));
        else this.remove.run(op.collection, op.key);
      }
    });
  }

  all<C extends CollectionName>(collection: C): Promise<Array<Collections[C]>> {
    const rows = this.selectAll.all(collection);
    // The rows are what this store's own commit() wrote (records.ts shapes, versioned by migrations.ts), not input
    // from outside; a second schema of every record would only restate records.ts.
    // eslint-disable-next-line @typescript-eslint/no-unsafe-type-assertion
    return Promise.resolve(rows.map((r) => JSON.parse(r.value) as Collections[C]));
  }

  commit(ops: StoreOp[]): Promise<void> {
    if (ops.length === 0) return Promise.resolve();
    const start = performance.now();
    try {
      this.commitTx(ops);
    } catch (err) {
      emit({ kind: 'store-commit', ms: elapsed(start), ok: false });
      return Promise.reject(tsnetError('TSN_STORE', `state commit of ${ops.length} change(s) failed`, err));
    }
    emit({ kind: 'store-commit', ms: elapsed(start), ok: true });
    log.debug('store commit', {
      ops: ops.map((o) => `${o.kind} ${o.collection}/${o.key}`),
      ms: Math.round((performance.now() - start) * 100) / 100,
    });
    return Promise.resolve();
  }

  close(): Promise<void> {
    if (this.db.open) this.db.close();
    return Promise.resolve();
  }
}
