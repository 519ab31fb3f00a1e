import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { TsnetDriver } from '../../src/driver/driver';
import { FakeKernel } from '../../src/kernel/fake';
import { SqliteStore } from '../../src/store/sqlite';
import { EID, NID } from './driver-fixtures';

/** A state directory as tsnet wrote it before records carried their mode (schema 1): it must open and mean the same. */
function writeSchema1(file: string, network: object, endpoint: object): void {
  const db = new Database(file);
  db.exec('CREATE TABLE records (collection TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (collection, key)) WITHOUT ROWID');
  db.pragma('user_version = 1');
  const put = db.prepare('INSERT INTO records (collection, key, value) VALUES (?, ?, ?)');
  put.run('network', NID, JSON.stringify(network));
  put.run('endpoint', EID, JSON.stringify(endpoint));
  db.close();
}

const v1Network = (options: Record<string, string>) => ({
  id: NID,
  mode: 'bridge',
  bridge: 'tsbr-aaaaaaaaaa',
  ownsBridge: true,
  bridgeAddresses: ['172.28.5.254/16'],
  mac: '02:42:ac:1c:05:fe',
  ipv4: [{ pool: '172.28.0.0/16', gateway: '172.28.5.254/16', auxAddresses: {} }],
  ipv6: [],
  enableIPv6: false,
  internal: false,
  options,
  createdAt: '2026-11-30T00:00:00.000Z',
});
const v1Endpoint = {
  id: EID,
  networkId: NID,
  hostIf: 'tsvbbbbbbbbbbbb',
  containerIf: 'tscbbbbbbbbbbbb',
  mac: '02:42:ac:1c:05:0a',
  address: '172.28.5.10/16',
  createdAt: '2026-11-30T00:00:00.000Z',
};

describe('state written by schema 1', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-migrate-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  async function load(options: Record<string, string>) {
    const file = path.join(dir, 'tsnet.db');
    writeSchema1(file, v1Network(options), v1Endpoint);
    const store = new SqliteStore(file);
    const kernel = new FakeKernel();
    const driver = await TsnetDriver.load(store, kernel);
    await driver.reconcile();
    return { store, kernel, driver };
  }

  test('bridge options given as strings keep their meaning: icc, masquerade, interface prefix, host binding', async () => {
    const { store, kernel, driver } = await load({
      'com.docker.network.bridge.enable_icc': 'False',
      'com.docker.network.bridge.enable_ip_masquerade': '0',
      'com.docker.network.container_iface_prefix': 'lan',
      'com.docker.network.bridge.host_binding_ipv4': '127.0.0.1',
    });
    expect(kernel.firewall.networks.get('tsbr-aaaaaaaaaa')).toEqual({ bridge: 'tsbr-aaaaaaaaaa', internal: false, icc: false, masquerade: false });
    // The old endpoint is still a veth endpoint: rebuilt, kept apart by icc=false, joined with the old prefix.
    expect(kernel.linkMap.get('tsvbbbbbbbbbbbb')?.master).toBe('tsbr-aaaaaaaaaa');
    expect(kernel.firewall.noIccPorts.has('tsvbbbbbbbbbbbb')).toBe(true);
    const join = await driver.join({ networkId: NID, endpointId: EID, sandboxKey: '/var/run/docker/netns/x', options: {} });
    expect(join).toMatchObject({ srcName: 'tscbbbbbbbbbbbb', dstPrefix: 'lan', gateway: '172.28.5.254' });
    await driver.programExternalConnectivity({ networkId: NID, endpointId: EID, portBindings: [{ proto: 'tcp', port: 80, hostPort: 0, hostPortEnd: 0 }] });
    expect([...kernel.firewall.ports.values()]).toEqual([{ proto: 'tcp', hostIp: '127.0.0.1', hostPort: expect.any(Number) as number, containerIp: '172.28.5.10', containerPort: 80 }]);
    await driver.stop();
    await store.close();
  });

  test('absent options take the defaults', async () => {
    const { store, kernel, driver } = await load({});
    expect(kernel.firewall.networks.get('tsbr-aaaaaaaaaa')).toMatchObject({ icc: true, masquerade: true });
    const join = await driver.join({ networkId: NID, endpointId: EID, sandboxKey: '/var/run/docker/netns/x', options: {} });
    expect(join.dstPrefix).toBe('eth');
    await driver.stop();
    await store.close();
  });
});
