import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import type { Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { AdminClient, AdminRequestError } from '../../src/admin/client';
import { type AdminDeps, listenAdmin } from '../../src/admin/server';
import { closeServer } from '../../src/unix-server';
import { TsnetIpam } from '../../src/ipam/driver';
import { EID, EID2, NID, netReq, setup } from './driver-fixtures';

/** The admin routes against a driver on the fake kernel and the in-memory store, served on a temp socket. */
describe('admin socket', () => {
  let dir: string;
  let server: Server | undefined;
  let stopDriver: (() => Promise<void>) | undefined;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-admin-'))));
  afterEach(async () => {
    if (server) await closeServer(server);
    server = undefined;
    // Frees the host ports the published endpoint holds.
    await stopDriver?.();
    stopDriver = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function serve(over: Partial<AdminDeps> = {}) {
    const t = await setup();
    await stopDriver?.();
    stopDriver = () => t.driver.stop();
    const ipam = await TsnetIpam.load(t.store, { defaultPoolsV4: [], defaultPoolsV6: [], hostRoutes: () => Promise.resolve([]) });
    // The network's subnet is a tsnet pool with the gateway and one endpoint address taken.
    const pool = await ipam.requestPool({ addressSpace: 'tsnet-local', pool: '172.28.0.0/16', subPool: '', options: {}, v6: false });
    await ipam.requestAddress({ poolId: pool.poolId, address: '172.28.5.254', options: { RequestAddressType: 'com.docker.network.gateway' } });
    await ipam.requestAddress({ poolId: pool.poolId, address: '172.28.5.2', options: {} });
    await t.driver.createNetwork(netReq());
    await t.driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.2/16' }, options: {} });
    await t.driver.join({ networkId: NID, endpointId: EID, sandboxKey: '/var/run/docker/netns/abc', options: {} });
    await t.driver.programExternalConnectivity({ networkId: NID, endpointId: EID, portBindings: [{ proto: 'tcp', port: 80, hostPort: 0, hostPortEnd: 0 }] });
    await t.driver.createEndpoint({ networkId: NID, endpointId: EID2, iface: { address: '172.28.5.3/16' }, options: {} });
    const socket = path.join(dir, 'sub', 'admin.sock');
    const deps: AdminDeps = {
      driver: t.driver,
      ipam,
      storeCheck: () => t.store.all('trust').then(() => undefined),
      ready: () => true,
      containers: () => Promise.resolve([{ id: 'f'.repeat(64), name: 'web', endpointIds: [EID] }]),
      ...over,
    };
    server = await listenAdmin(deps, socket);
    return { ...t, socket, client: new AdminClient(socket) };
  }

  test('the socket is 0600 in a 0700 directory it made', async () => {
    const { socket } = await serve();
    expect(fs.statSync(socket).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(socket)).mode & 0o777).toBe(0o700);
  });

  test('a stale admin socket of a killed tsnet is replaced (still 0600); one a live tsnet serves is refused; stop removes it', async () => {
    const socket = path.join(dir, 'sub', 'admin.sock');
    fs.mkdirSync(path.dirname(socket), { mode: 0o700 });
    spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socket)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(fs.lstatSync(socket).isSocket()).toBe(true);
    const { client } = await serve();
    expect(fs.statSync(socket).mode & 0o777).toBe(0o600);
    expect((await client.status()).ready).toBe(true);
    const t = await setup();
    const deps = { driver: t.driver, ipam: { allocations: () => ({ pools: [], addresses: [] }) }, storeCheck: () => Promise.resolve(), ready: () => true };
    await expect(listenAdmin(deps, socket)).rejects.toMatchObject({ code: 'TSN_STATE_LOCKED' });
    if (server) await closeServer(server);
    server = undefined;
    expect(fs.existsSync(socket)).toBe(false);
  });

  test('GET /status: networks with pool use, endpoints, pools, store health, ready', async () => {
    const { client } = await serve();
    const s = await client.status();
    expect(s).toMatchObject({ version: '0.1.0', ready: true, store: { ok: true } });
    expect(s.networks).toEqual([{ id: NID, mode: 'bridge', link: expect.any(String), subnets: ['172.28.0.0/16'], internal: false, endpoints: 2, poolUse: { used: 2, size: '65536' }, pending: false }]);
    expect(s.endpoints.map((e) => [e.id, e.addresses, e.joined, e.ports])).toEqual([
      [EID, ['172.28.5.2/16'], true, 1],
      [EID2, ['172.28.5.3/16'], false, 0],
    ]);
    expect(s.pools).toEqual([{ id: 'tsnet-local/172.28.0.0/16', pool: '172.28.0.0/16', used: 2, size: '65536' }]);
  });

  test('GET /status reports a failing store without failing', async () => {
    const { client } = await serve({ storeCheck: () => Promise.reject(new Error('disk I/O error')) });
    expect((await client.status()).store).toEqual({ ok: false, error: 'disk I/O error' });
  });

  test('GET /ports: every published port with its container; by name, id or id prefix; unknown container refused', async () => {
    const { client } = await serve();
    const all = await client.ports();
    expect(all.ports).toEqual([
      { endpointId: EID, networkId: NID, containerId: 'f'.repeat(64), containerName: 'web', proto: 'tcp', containerPort: 80, containerIp: '172.28.5.2', hostPort: expect.any(Number) },
    ]);
    expect(all.ports[0].hostPort).toBeGreaterThan(0);
    for (const c of ['web', '/web', 'f'.repeat(64), 'fff']) expect((await client.ports(c)).ports).toEqual(all.ports);
    const err = await client.ports('db').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AdminRequestError);
    expect(err).toMatchObject({ status: 400, message: expect.stringContaining('no running container "db"') });
  });

  test('GET /ports without Docker: ports listed unnamed with the reason; a container cannot be looked up', async () => {
    const { client } = await serve({ containers: () => Promise.reject(new Error('connect ENOENT /var/run/docker.sock')) });
    const all = await client.ports();
    expect(all.ports.map((p) => [p.endpointId, p.containerName])).toEqual([[EID, undefined]]);
    expect(all.dockerError).toContain('ENOENT');
    await expect(client.ports('web')).rejects.toMatchObject({ status: 503, message: expect.stringContaining('ENOENT') });
  });

  test('GET /reconcile plans without changing; POST /reconcile applies; then the plan is empty', async () => {
    const { client, kernel } = await serve();
    expect((await client.reconcile(false)).repairs).toEqual([]);
    // The second endpoint's veth (not joined yet) is lost behind tsnet's back.
    const veth = [...kernel.linkMap.values()].find((l) => l.name.includes('d'.repeat(8)) && l.peer !== undefined);
    expect(veth).toBeDefined();
    // Both ends go, as in the kernel.
    kernel.linkMap.delete(veth?.name ?? '');
    kernel.linkMap.delete(veth?.peer ?? '');
    const plan = await client.reconcile(false);
    expect(plan.applied).toBe(false);
    expect(plan.repairs.length).toBeGreaterThan(0);
    expect(plan.repairs[0]).toMatchObject({ networkId: NID, endpointId: EID2, description: expect.stringContaining('veth') });
    expect(kernel.linkMap.has(veth?.name ?? '')).toBe(false);
    const done = await client.reconcile(true);
    expect(done).toEqual({ ...plan, applied: true });
    expect(kernel.linkMap.has(veth?.name ?? '')).toBe(true);
    expect((await client.reconcile(false)).repairs).toEqual([]);
  });

  test('GET /metrics: the provider\'s text, or 503 {"Err"} without one', async () => {
    const { client } = await serve();
    await expect(client.metrics()).rejects.toMatchObject({ status: 503, message: 'no metrics in this tsnet' });
    if (server) await closeServer(server);
    server = undefined;
    const again = await serve({ metrics: () => Promise.resolve('tsnet_up 1\n') });
    expect(await again.client.metrics()).toBe('tsnet_up 1\n');
  });

  test('a daemon that is not running is said to be down', async () => {
    const err = await new AdminClient(path.join(dir, 'none.sock')).status().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AdminRequestError);
    expect((err as AdminRequestError).status).toBeUndefined();
    expect((err as Error).message).toMatch(/does not answer \(is the daemon running\?\)/);
  });
});
