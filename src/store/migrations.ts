import type Database from 'better-sqlite3';

/**
 * Schema migrations, applied in order; PRAGMA user_version holds the number applied. Append, never edit: a
 * state directory written by an older tsnet must open with a newer one.
 */
const migrations: Array<(db: Database.Database) => void> = [
  (db) => {
    db.exec(`CREATE TABLE records (
      collection TEXT NOT NULL,
      key TEXT NOT NULL,
      value TEXT NOT NULL,
      PRIMARY KEY (collection, key)
    ) WITHOUT ROWID`);
  },
];

export const SCHEMA_VERSION = migrations.length;

export function migrate(db: Database.Database): void {
  const current: unknown = db.pragma('user_version', { simple: true });
  if (typeof current !== 'number') throw new Error(`state schema version is not a number: ${JSON.stringify(current)}`);
  if (current > SCHEMA_VERSION) {
    throw new Error(`state schema version ${current} is newer than this tsnet understands (${SCHEMA_VERSION})`);
  }
  for (let v = current; v < SCHEMA_VERSION; v++) {
    db.transaction(() => {
      migrations[v](db);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}
