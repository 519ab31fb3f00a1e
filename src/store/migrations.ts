import type Database from 'better-sqlite3';
import { z } from 'zod';

const Rows = z.array(z.object({ collection: z.string(), key: z.string(), value: z.string() }));
const Json = z.record(z.string(), z.unknown());

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
  // 2: records discriminated by mode (step 4). Endpoints so far were all bridge (veth) endpoints; bridge networks
  // keep their options parsed (`settings`) instead of re-reading the raw `-o` strings, which CreateNetwork had
  // already validated, so only their spelling needs reading here.
  (db) => {
    const rows = Rows.parse(db.prepare("SELECT collection, key, value FROM records WHERE collection IN ('network', 'endpoint')").all());
    const update = db.prepare('UPDATE records SET value = ? WHERE collection = ? AND key = ?');
    const isTrue = (v: unknown, def: boolean) => (typeof v === 'string' ? /^(1|t|true)$/i.test(v) : def);
    for (const row of rows) {
      const rec = Json.parse(JSON.parse(row.value));
      if (row.collection === 'endpoint') rec.mode ??= 'bridge';
      else if (rec.mode === 'bridge' && rec.settings === undefined) {
        const o = Json.parse(rec.options ?? {});
        const text = (k: string, def: string) => (typeof o[k] === 'string' ? o[k] : def);
        rec.settings = {
          enableIcc: isTrue(o['com.docker.network.bridge.enable_icc'], true),
          enableMasquerade: isTrue(o['com.docker.network.bridge.enable_ip_masquerade'], true),
          hostBindingIpv4: text('com.docker.network.bridge.host_binding_ipv4', '0.0.0.0'),
          inhibitIpv4: isTrue(o['com.docker.network.bridge.inhibit_ipv4'], false),
          ifacePrefix: text('com.docker.network.container_iface_prefix', 'eth'),
        };
      }
      update.run(JSON.stringify(rec), row.collection, row.key);
    }
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
