import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_POOLS_V4, DEFAULT_POOLS_V6 } from '../../src/config';
import { TsnetError } from '../../src/errors';
import {
  GATEWAY_ADDRESS_TYPE,
  GLOBAL_ADDRESS_SPACE,
  LOCAL_ADDRESS_SPACE,
  type PoolRequest,
  REQUEST_ADDRESS_TYPE,
  SERIAL_OPTION,
} from '../../src/ipam/contract';
import { TsnetIpam, type TsnetIpamOptions } from '../../src/ipam/driver';
import { put, type Store, type StoreOp } from '../../src/store/contract';
import { SqliteStore } from '../../src/store/sqlite';

const stores: Store[] = [];
afterEach(async () => {
  await Promise.all(stores.splice(0).map((s) => s.close()));
});

function memoryStore(): SqliteStore {
  const store = new SqliteStore(':memory:');
  stores.push(store);
  return store;
}

async function setup(opts: Partial<TsnetIpamOptions> = {}, store: Store = memoryStore()) {
  const ipam = await TsnetIpam.load(store, {
    defaultPoolsV4: DEFAULT_POOLS_V4,
    defaultPoolsV6: DEFAULT_POOLS_V6,
    hostRoutes: () => Promise.resolve([]),
    ...opts,
  });
  return { ipam, store };
}

function poolReq(pool: string, extra: Partial<PoolRequest> = {}): PoolRequest {
  return { addressSpace: LOCAL_ADDRESS_SPACE, pool, subPool: '', options: {}, v6: pool.includes(':'), ...extra };
}

async function newPool(ipam: TsnetIpam, pool: string, extra: Partial<PoolRequest> = {}): Promise<string> {
  return (await ipam.requestPool(poolReq(pool, extra))).poolId;
}

async function addr(ipam: TsnetIpam, poolId: string, address = '', options: Record<string, string> = {}) {
  return (await ipam.requestAddress({ poolId, address, options })).address;
}

async function snapshot(store: Store) {
  return { pools: await store.all('pool'), addresses: await store.all('address') };
}

function code(c: string) {
  return expect.objectContaining({ code: c });
}

describe('capabilities and address spaces', () => {
  test('no MAC, no replay; tsnet address spaces', async () => {
    const { ipam } = await setup();
    expect(ipam.capabilities()).toEqual({ requiresMACAddress: false, requiresRequestReplay: false });
    expect(ipam.defaultAddressSpaces()).toEqual({ local: 'tsnet-local', global: 'tsnet-global' });
  });

  test('empty address space means local; global is separate; others are refused', async () => {
    const { ipam } = await setup();
    expect(await newPool(ipam, '10.9.0.0/16', { addressSpace: '' })).toBe('tsnet-local/10.9.0.0/16');
    expect(await newPool(ipam, '10.9.0.0/16', { addressSpace: GLOBAL_ADDRESS_SPACE })).toBe('tsnet-global/10.9.0.0/16');
    await expect(ipam.requestPool(poolReq('10.8.0.0/16', { addressSpace: 'LocalDefault' }))).rejects.toThrow(
      expect.objectContaining({ code: 'TSN_INVALID_OPTION', message: expect.stringContaining('"LocalDefault"') }),
    );
  });
});

describe('requestPool', () => {
  test('canonical pool, readable id, {} data, options stored as given', async () => {
    const { ipam, store } = await setup();
    const got = await ipam.requestPool(
      poolReq('172.28.1.0/16', { subPool: '172.28.5.0/24', options: { 'some.unknown': 'x' } }),
    );
    expect(got).toEqual({ poolId: 'tsnet-local/172.28.0.0/16/172.28.5.0/24', pool: '172.28.0.0/16', data: {} });
    expect(await store.all('pool')).toEqual([
      {
        id: 'tsnet-local/172.28.0.0/16/172.28.5.0/24',
        addressSpace: 'tsnet-local',
        pool: '172.28.0.0/16',
        subPool: '172.28.5.0/24',
        v6: false,
        refs: 1,
        options: { 'some.unknown': 'x' },
        dynamic: false,
      },
    ]);
  });

  test('identical requests share the id; the pool goes with the last release', async () => {
    const { ipam, store } = await setup();
    const a = await newPool(ipam, '10.1.0.0/16');
    await addr(ipam, a);
    const b = await newPool(ipam, '10.1.0.0/16');
    expect(b).toBe(a);
    expect((await store.all('pool'))[0]?.refs).toBe(2);
    await ipam.releasePool(a);
    expect((await store.all('pool'))[0]?.refs).toBe(1);
    expect(await addr(ipam, a)).toBe('10.1.0.2/16');
    await ipam.releasePool(a);
    expect(await snapshot(store)).toEqual({ pools: [], addresses: [] });
    await expect(addr(ipam, a)).rejects.toThrow(code('TSN_UNKNOWN_POOL'));
  });

  test('overlapping pools in the same space are refused naming both', async () => {
    const { ipam } = await setup();
    await newPool(ipam, '10.0.0.0/8');
    await expect(ipam.requestPool(poolReq('10.1.0.0/16'))).rejects.toThrow(
      expect.objectContaining({
        code: 'TSN_POOL_OVERLAP',
        message: 'Pool "10.1.0.0/16" overlaps pool 10.0.0.0/8 in address space tsnet-local',
      }),
    );
    // same pool, other ip-range: a different pool
    await expect(ipam.requestPool(poolReq('10.0.0.0/8', { subPool: '10.5.0.0/16' }))).rejects.toThrow(
      code('TSN_POOL_OVERLAP'),
    );
    expect(await newPool(ipam, '10.1.0.0/16', { addressSpace: GLOBAL_ADDRESS_SPACE })).toBe('tsnet-global/10.1.0.0/16');
  });

  test.each([
    [poolReq('10.0.0.0/33'), 'TSN_INVALID_ADDRESS', 'Pool "10.0.0.0/33": not a valid CIDR'],
    [poolReq('10.0.0.0/8', { v6: true }), 'TSN_INVALID_ADDRESS', 'Pool "10.0.0.0/8" is IPv4 but V6 is true'],
    [poolReq('fd00::/64', { v6: false }), 'TSN_INVALID_ADDRESS', 'Pool "fd00::/64" is IPv6 but V6 is false'],
    [poolReq('', { subPool: '10.0.1.0/24' }), 'TSN_INVALID_REQUEST', 'SubPool "10.0.1.0/24" given without Pool'],
    [
      poolReq('172.28.0.0/16', { subPool: '10.1.0.0/24' }),
      'TSN_INVALID_ADDRESS',
      'SubPool "10.1.0.0/24" is not inside Pool "172.28.0.0/16"',
    ],
    [
      poolReq('172.28.0.0/16', { subPool: 'fd00::/64' }),
      'TSN_INVALID_ADDRESS',
      'SubPool "fd00::/64" is not inside Pool "172.28.0.0/16"',
    ],
    [
      poolReq('172.28.0.0/16', { subPool: '172.28.0.0/300' }),
      'TSN_INVALID_ADDRESS',
      'SubPool "172.28.0.0/300": not a valid CIDR',
    ],
    [poolReq('::ffff:0:0/96', { v6: true }), 'TSN_INVALID_ADDRESS', expect.stringContaining('IPv4')],
    [poolReq('10.0.0.0/8', { addressSpace: 'nope' }), 'TSN_INVALID_OPTION', expect.stringContaining('"nope"')],
  ])('bad request %j is refused and changes nothing', async (req, errCode, message) => {
    const { ipam, store } = await setup();
    const id = await newPool(ipam, '192.168.7.0/24');
    await addr(ipam, id);
    const before = await snapshot(store);
    await expect(ipam.requestPool(req)).rejects.toThrow(expect.objectContaining({ code: errCode, message }));
    expect(await snapshot(store)).toEqual(before);
    expect(await addr(ipam, id)).toBe('192.168.7.2/24');
  });

  test('a request IPv4-mapped in form is an IPv4 pool', async () => {
    const { ipam } = await setup();
    expect((await ipam.requestPool(poolReq('::ffff:10.3.0.0/112', { v6: false }))).pool).toBe('10.3.0.0/16');
  });
});

describe('default pools', () => {
  const v4Default = (extra: Partial<PoolRequest> = {}) => poolReq('', { v6: false, ...extra });

  test('picks the first free default, skipping tsnet pools and host routes', async () => {
    const routes = jest.fn((v6: boolean) => Promise.resolve(v6 ? ['::/0'] : ['0.0.0.0/0', '172.18.0.0/16', 'junk']));
    const { ipam, store } = await setup({ hostRoutes: routes });
    await newPool(ipam, '172.17.0.0/24');
    const got = await ipam.requestPool(v4Default({ options: { a: 'b' } }));
    expect(got).toEqual({ poolId: 'tsnet-local/172.19.0.0/16', pool: '172.19.0.0/16', data: {} });
    expect(routes).toHaveBeenCalledWith(false);
    const rec = (await store.all('pool')).find((p) => p.id === got.poolId);
    expect(rec).toMatchObject({ dynamic: true, refs: 1, v6: false, options: { a: 'b' } });
    expect((await ipam.requestPool(v4Default())).pool).toBe('172.20.0.0/16');
  });

  test('each empty request gets a new pool, and a released one is reused', async () => {
    const { ipam } = await setup();
    const a = await ipam.requestPool(v4Default());
    const b = await ipam.requestPool(v4Default());
    expect([a.pool, b.pool]).toEqual(['172.17.0.0/16', '172.18.0.0/16']);
    await ipam.releasePool(a.poolId);
    expect((await ipam.requestPool(v4Default())).pool).toBe('172.17.0.0/16');
  });

  test('an explicit request for a pool tsnet picked is an overlap, not a share', async () => {
    const { ipam } = await setup();
    const dyn = await ipam.requestPool(v4Default());
    await expect(ipam.requestPool(poolReq(dyn.pool))).rejects.toThrow(
      expect.objectContaining({
        code: 'TSN_POOL_OVERLAP',
        message: 'Pool "172.17.0.0/16" overlaps pool 172.17.0.0/16 in address space tsnet-local',
      }),
    );
  });

  test('pools of the other address space are avoided too', async () => {
    const { ipam } = await setup();
    await newPool(ipam, '172.17.0.0/16', { addressSpace: GLOBAL_ADDRESS_SPACE });
    expect((await ipam.requestPool(v4Default())).pool).toBe('172.18.0.0/16');
  });

  test('exhaustion is TSN_NO_AVAILABLE_POOL and changes nothing', async () => {
    const { ipam, store } = await setup({ defaultPoolsV4: [{ base: '10.10.0.0/23', size: 24 }] });
    expect((await ipam.requestPool(v4Default())).pool).toBe('10.10.0.0/24');
    expect((await ipam.requestPool(v4Default())).pool).toBe('10.10.1.0/24');
    const before = await snapshot(store);
    await expect(ipam.requestPool(v4Default())).rejects.toThrow(
      expect.objectContaining({ code: 'TSN_NO_AVAILABLE_POOL', message: expect.stringContaining('10.10.0.0/23') }),
    );
    expect(await snapshot(store)).toEqual(before);
  });

  test('IPv6 default: a /64 of the ULA /48, skipping a routed block', async () => {
    const { ipam } = await setup({
      hostRoutes: (v6) => Promise.resolve(v6 ? ['fd74:736e:6574::/63'] : []),
    });
    const got = await ipam.requestPool(poolReq('', { v6: true }));
    expect(got.pool).toBe('fd74:736e:6574:2::/64');
    expect(await addr(ipam, got.poolId)).toBe('fd74:736e:6574:2::1/64');
  });

  test('concurrent default requests get distinct pools', async () => {
    const { ipam } = await setup();
    const got = await Promise.all(Array.from({ length: 5 }, () => ipam.requestPool(v4Default())));
    expect(got.map((p) => p.pool)).toEqual([
      '172.17.0.0/16',
      '172.18.0.0/16',
      '172.19.0.0/16',
      '172.20.0.0/16',
      '172.21.0.0/16',
    ]);
  });

  test('bad default specs fail the load', async () => {
    await expect(setup({ defaultPoolsV4: [{ base: '10.0.0.0/16', size: 8 }] })).rejects.toThrow(
      code('TSN_INVALID_OPTION'),
    );
    await expect(setup({ defaultPoolsV6: [{ base: '10.0.0.0/8', size: 16 }] })).rejects.toThrow(
      code('TSN_INVALID_OPTION'),
    );
  });
});

describe('requestAddress', () => {
  test('/30: two addresses, then TSN_NO_AVAILABLE_IPS naming the pool', async () => {
    const { ipam } = await setup();
    const id = await newPool(ipam, '10.0.0.0/30');
    expect(await addr(ipam, id)).toBe('10.0.0.1/30');
    expect(await addr(ipam, id)).toBe('10.0.0.2/30');
    await expect(addr(ipam, id)).rejects.toThrow(
      expect.objectContaining({
        code: 'TSN_NO_AVAILABLE_IPS',
        message: 'no available IP address left in pool 10.0.0.0/30',
      }),
    );
  });

  test.each([
    ['10.0.0.0/31', ['10.0.0.0/31', '10.0.0.1/31']],
    ['10.0.0.9/32', ['10.0.0.9/32']],
    ['fd00::/127', ['fd00::/127', 'fd00::1/127']],
    ['fd00::7/128', ['fd00::7/128']],
    ['fd00::/126', ['fd00::1/126', 'fd00::2/126', 'fd00::3/126']],
  ])('%s hands out exactly %j', async (pool, expected) => {
    const { ipam } = await setup();
    const id = await newPool(ipam, pool);
    const got: string[] = [];
    while (got.length < expected.length) got.push(await addr(ipam, id));
    expect(got).toEqual(expected);
    await expect(addr(ipam, id)).rejects.toThrow(code('TSN_NO_AVAILABLE_IPS'));
  });

  test('explicit addresses: reply with the pool prefix; reserved, foreign and taken ones are refused', async () => {
    const { ipam, store } = await setup();
    const id = await newPool(ipam, '172.28.0.0/16');
    expect(await addr(ipam, id, '172.28.5.2')).toBe('172.28.5.2/16');
    const before = await snapshot(store);
    const cases: Array<[string, string, string]> = [
      ['172.28.5.2', 'TSN_ADDRESS_IN_USE', 'Address "172.28.5.2": already allocated in pool 172.28.0.0/16'],
      ['10.0.1.5', 'TSN_INVALID_ADDRESS', 'Address "10.0.1.5": not in pool 172.28.0.0/16'],
      ['172.28.0.0', 'TSN_INVALID_ADDRESS', 'Address "172.28.0.0": is the network address of pool 172.28.0.0/16'],
      [
        '172.28.255.255',
        'TSN_INVALID_ADDRESS',
        'Address "172.28.255.255": is the broadcast address of pool 172.28.0.0/16',
      ],
      ['172.28.5', 'TSN_INVALID_ADDRESS', 'Address "172.28.5": not a valid IP address'],
      ['fd00::1', 'TSN_INVALID_ADDRESS', 'Address "fd00::1": not in pool 172.28.0.0/16'],
    ];
    for (const [address, errCode, message] of cases) {
      await expect(addr(ipam, id, address)).rejects.toThrow(expect.objectContaining({ code: errCode, message }));
    }
    expect(await snapshot(store)).toEqual(before);
    expect(await addr(ipam, id, '::ffff:172.28.9.9')).toBe('172.28.9.9/16');
  });

  test('unknown pool is TSN_UNKNOWN_POOL naming it', async () => {
    const { ipam } = await setup();
    await expect(addr(ipam, 'tsnet-local/10.0.0.0/8')).rejects.toThrow(
      expect.objectContaining({
        code: 'TSN_UNKNOWN_POOL',
        message: expect.stringContaining('"tsnet-local/10.0.0.0/8"'),
      }),
    );
  });

  test('gateway and aux addresses collide with later requests', async () => {
    const { ipam, store } = await setup();
    const id = await newPool(ipam, '172.30.0.0/24');
    const gw = { [REQUEST_ADDRESS_TYPE]: GATEWAY_ADDRESS_TYPE };
    expect(await addr(ipam, id, '', gw)).toBe('172.30.0.1/24');
    expect(await addr(ipam, id, '172.30.0.3')).toBe('172.30.0.3/24'); // aux
    await expect(addr(ipam, id, '172.30.0.1', gw)).rejects.toThrow(code('TSN_ADDRESS_IN_USE'));
    await expect(addr(ipam, id, '172.30.0.3')).rejects.toThrow(code('TSN_ADDRESS_IN_USE'));
    expect(await addr(ipam, id)).toBe('172.30.0.2/24');
    expect(await addr(ipam, id)).toBe('172.30.0.4/24');
    const kinds = Object.fromEntries((await store.all('address')).map((a) => [a.address, a.kind]));
    expect(kinds).toEqual({
      '172.30.0.1': 'gateway',
      '172.30.0.2': 'address',
      '172.30.0.3': 'address',
      '172.30.0.4': 'address',
    });
    expect((await store.all('address')).map((a) => a.poolId)).toEqual(Array(4).fill(id));
  });

  test('ip-range: dynamic only inside it, static anywhere in the pool', async () => {
    const { ipam } = await setup();
    const id = await newPool(ipam, '172.28.0.0/16', { subPool: '172.28.5.0/30' });
    expect(await addr(ipam, id, '172.28.9.1')).toBe('172.28.9.1/16');
    expect(await addr(ipam, id, '', { [REQUEST_ADDRESS_TYPE]: GATEWAY_ADDRESS_TYPE })).toBe('172.28.5.0/16');
    expect(await addr(ipam, id)).toBe('172.28.5.1/16');
    expect(await addr(ipam, id, '172.28.5.2')).toBe('172.28.5.2/16');
    expect(await addr(ipam, id)).toBe('172.28.5.3/16');
    await expect(addr(ipam, id)).rejects.toThrow(
      expect.objectContaining({
        code: 'TSN_NO_AVAILABLE_IPS',
        message: 'no available IP address left in ip-range 172.28.5.0/30 of pool 172.28.0.0/16',
      }),
    );
    expect(await addr(ipam, id, '172.28.200.7')).toBe('172.28.200.7/16');
  });

  test('an ip-range at the pool edge excludes network and broadcast', async () => {
    const { ipam } = await setup();
    const id = await newPool(ipam, '10.4.0.0/24', { subPool: '10.4.0.252/30' });
    expect(await addr(ipam, id)).toBe('10.4.0.252/24');
    expect(await addr(ipam, id)).toBe('10.4.0.253/24');
    expect(await addr(ipam, id)).toBe('10.4.0.254/24');
    await expect(addr(ipam, id)).rejects.toThrow(code('TSN_NO_AVAILABLE_IPS'));
  });

  test('freed addresses are handed out again, lowest first', async () => {
    const { ipam } = await setup();
    const id = await newPool(ipam, '10.5.0.0/24');
    for (let i = 0; i < 5; i++) await addr(ipam, id);
    await ipam.releaseAddress(id, '10.5.0.4');
    await ipam.releaseAddress(id, '10.5.0.2');
    expect(await addr(ipam, id)).toBe('10.5.0.2/24');
    expect(await addr(ipam, id)).toBe('10.5.0.4/24');
    expect(await addr(ipam, id)).toBe('10.5.0.6/24');
  });
});

describe('large pools', () => {
  test.each(['fd00:1::/64', 'fd00:2::/48', '10.0.0.0/8'])('%s: allocations are instant', async (pool) => {
    const { ipam } = await setup();
    const id = await newPool(ipam, pool);
    const start = performance.now();
    const got: string[] = [];
    for (let i = 0; i < 200; i++) got.push(await addr(ipam, id));
    expect(performance.now() - start).toBeLessThan(2000);
    expect(new Set(got).size).toBe(200);
    expect(got[0]).toBe(pool.startsWith('10.') ? '10.0.0.1/8' : `${pool.split('/')[0]}1/${pool.split('/')[1]}`);
  });

  test('/64: the last address and a fragmented set stay fast', async () => {
    const { ipam } = await setup();
    const id = await newPool(ipam, 'fd00:3::/64');
    expect(await addr(ipam, id, 'fd00:3::ffff:ffff:ffff:ffff')).toBe('fd00:3::ffff:ffff:ffff:ffff/64');
    for (let i = 0; i < 2000; i++) await addr(ipam, id);
    for (let i = 1; i <= 2000; i += 2) await ipam.releaseAddress(id, `fd00:3::${i.toString(16)}`);
    const start = performance.now();
    const again: string[] = [];
    for (let i = 0; i < 1000; i++) again.push(await addr(ipam, id));
    expect(performance.now() - start).toBeLessThan(2000);
    expect(again[0]).toBe('fd00:3::1/64');
    expect(again[999]).toBe(`fd00:3::${(1999).toString(16)}/64`);
    expect(await addr(ipam, id)).toBe(`fd00:3::${(2001).toString(16)}/64`);
  });
});

describe('serial allocation', () => {
  const serial = { [SERIAL_OPTION]: 'true' };

  test('continues after the last handed out, wraps around, and persists the cursor', async () => {
    const { ipam, store } = await setup();
    const id = await newPool(ipam, '10.6.0.0/29'); // hosts .1 to .6
    expect(await addr(ipam, id, '', serial)).toBe('10.6.0.1/29');
    expect(await addr(ipam, id, '', serial)).toBe('10.6.0.2/29');
    await ipam.releaseAddress(id, '10.6.0.1');
    expect(await addr(ipam, id, '', serial)).toBe('10.6.0.3/29');
    expect((await store.all('pool'))[0]?.serialCursor).toBe('4');
    expect(await addr(ipam, id)).toBe('10.6.0.1/29'); // non-serial: lowest free, cursor untouched
    expect(await addr(ipam, id, '', serial)).toBe('10.6.0.4/29');
    expect(await addr(ipam, id, '', serial)).toBe('10.6.0.5/29');
    expect(await addr(ipam, id, '', serial)).toBe('10.6.0.6/29');
    await ipam.releaseAddress(id, '10.6.0.2');
    expect(await addr(ipam, id, '', serial)).toBe('10.6.0.2/29'); // wrapped
    await expect(addr(ipam, id, '', serial)).rejects.toThrow(code('TSN_NO_AVAILABLE_IPS'));

    const reloaded = await TsnetIpam.load(store, {
      defaultPoolsV4: [],
      defaultPoolsV6: [],
      hostRoutes: () => Promise.resolve([]),
    });
    await reloaded.releaseAddress(id, '10.6.0.5');
    await reloaded.releaseAddress(id, '10.6.0.1');
    expect(await addr(reloaded, id, '', serial)).toBe('10.6.0.5/29');
  });

  test('an --ipam-opt serial=true makes every dynamic allocation of the pool serial', async () => {
    const { ipam } = await setup();
    const id = await newPool(ipam, '10.7.0.0/24', { options: serial });
    expect(await addr(ipam, id)).toBe('10.7.0.1/24');
    await ipam.releaseAddress(id, '10.7.0.1');
    expect(await addr(ipam, id)).toBe('10.7.0.2/24');
    expect(await addr(ipam, id, '', { [SERIAL_OPTION]: 'false' })).toBe('10.7.0.1/24');
  });
});

describe('pools stored before the special-use rule', () => {
  test('a stored pool that a request would now be refused still loads, serves and is released', async () => {
    const store = memoryStore();
    const id = 'tsnet-local/127.5.0.0/16';
    await store.commit([put('pool', id, { id, addressSpace: LOCAL_ADDRESS_SPACE, pool: '127.5.0.0/16', v6: false, refs: 1, options: {}, dynamic: false })]);
    const { ipam } = await setup({}, store);
    expect(await addr(ipam, id)).toBe('127.5.0.1/16');
    await ipam.releasePool(id);
    expect(await store.all('pool')).toEqual([]);
    await expect(ipam.requestPool(poolReq('127.5.0.0/16'))).rejects.toThrow(code('TSN_INVALID_ADDRESS'));
  });
});

describe('release', () => {
  test('unknown pools and addresses are released quietly', async () => {
    const { ipam, store } = await setup();
    const id = await newPool(ipam, '10.2.0.0/24');
    await addr(ipam, id);
    const before = await snapshot(store);
    await expect(ipam.releasePool('tsnet-local/1.2.3.0/24')).resolves.toBeUndefined();
    await expect(ipam.releaseAddress('nope', '1.2.3.4')).resolves.toBeUndefined();
    await expect(ipam.releaseAddress(id, '10.2.0.77')).resolves.toBeUndefined();
    await expect(ipam.releaseAddress(id, '10.9.9.9')).resolves.toBeUndefined();
    expect(await snapshot(store)).toEqual(before);
  });

  test('a malformed address on a known pool is refused', async () => {
    const { ipam } = await setup();
    const id = await newPool(ipam, '10.2.0.0/24');
    await expect(ipam.releaseAddress(id, 'banana')).rejects.toThrow(code('TSN_INVALID_ADDRESS'));
  });

  test('releasing the last reference deletes the pool and its addresses in one commit', async () => {
    const store = memoryStore();
    const commits: StoreOp[][] = [];
    const spy: Store = {
      all: (c) => store.all(c),
      commit: (ops) => {
        commits.push(ops);
        return store.commit(ops);
      },
      close: () => store.close(),
    };
    const { ipam } = await setup({}, spy);
    const id = await newPool(ipam, '10.3.0.0/24');
    await addr(ipam, id);
    await addr(ipam, id, '10.3.0.9');
    commits.length = 0;
    await ipam.releasePool(id);
    expect(commits).toEqual([
      [
        { kind: 'delete', collection: 'pool', key: id },
        { kind: 'delete', collection: 'address', key: `${id}|10.3.0.1` },
        { kind: 'delete', collection: 'address', key: `${id}|10.3.0.9` },
      ],
    ]);
    expect(await snapshot(store)).toEqual({ pools: [], addresses: [] });
  });
});

describe('concurrency and failures', () => {
  test('50 parallel requests get 50 distinct addresses, all persisted', async () => {
    const { ipam, store } = await setup();
    const id = await newPool(ipam, '10.11.0.0/24');
    const got = await Promise.all(Array.from({ length: 50 }, () => addr(ipam, id)));
    expect(new Set(got).size).toBe(50);
    expect([...got].sort()).toEqual(
      Array.from({ length: 50 }, (_, i) => `10.11.0.${i + 1}/24`).sort(),
    );
    expect((await store.all('address')).length).toBe(50);
  });

  test('50 parallel requests on an async store still get distinct addresses', async () => {
    const store = memoryStore();
    const slow: Store = {
      all: (c) => store.all(c),
      commit: async (ops) => {
        await new Promise((r) => setTimeout(r, Math.random() * 5));
        return store.commit(ops);
      },
      close: () => store.close(),
    };
    const { ipam } = await setup({}, slow);
    const id = await newPool(ipam, 'fd00:9::/64');
    const got = await Promise.all(Array.from({ length: 50 }, () => addr(ipam, id)));
    expect(new Set(got).size).toBe(50);
    expect((await store.all('address')).length).toBe(50);
  });

  function failingStore(): { store: Store; failNext: () => void } {
    const inner = memoryStore();
    let fail = false;
    return {
      store: {
        all: (c) => inner.all(c),
        commit: (ops) => {
          if (fail) {
            fail = false;
            return Promise.reject(new TsnetError('TSN_STORE', 'disk on fire'));
          }
          return inner.commit(ops);
        },
        close: () => inner.close(),
      },
      failNext: () => {
        fail = true;
      },
    };
  }

  test('a failed commit leaves memory unchanged: the next request gets the same address', async () => {
    const { store, failNext } = failingStore();
    const { ipam } = await setup({}, store);
    const id = await newPool(ipam, '10.12.0.0/24');
    expect(await addr(ipam, id)).toBe('10.12.0.1/24');
    const before = await snapshot(store);
    failNext();
    await expect(addr(ipam, id)).rejects.toThrow(expect.objectContaining({ code: 'TSN_STORE' }));
    expect(await snapshot(store)).toEqual(before);
    expect(await addr(ipam, id)).toBe('10.12.0.2/24');

    failNext();
    await expect(addr(ipam, id, '10.12.0.50')).rejects.toThrow(code('TSN_STORE'));
    expect(await addr(ipam, id, '10.12.0.50')).toBe('10.12.0.50/24');
  });

  test('a failed serial commit restores the cursor', async () => {
    const { store, failNext } = failingStore();
    const { ipam } = await setup({}, store);
    const id = await newPool(ipam, '10.13.0.0/24');
    const serial = { [SERIAL_OPTION]: 'true' };
    expect(await addr(ipam, id, '', serial)).toBe('10.13.0.1/24');
    failNext();
    await expect(addr(ipam, id, '', serial)).rejects.toThrow(code('TSN_STORE'));
    expect(await addr(ipam, id, '', serial)).toBe('10.13.0.2/24');
    expect((await store.all('pool'))[0]?.serialCursor).toBe('3');
  });

  test('failed pool commits leave no pool and no reference behind', async () => {
    const { store, failNext } = failingStore();
    const { ipam } = await setup({}, store);
    failNext();
    await expect(ipam.requestPool(poolReq('10.14.0.0/16'))).rejects.toThrow(code('TSN_STORE'));
    await expect(addr(ipam, 'tsnet-local/10.14.0.0/16')).rejects.toThrow(code('TSN_UNKNOWN_POOL'));
    const id = await newPool(ipam, '10.14.0.0/16');
    failNext();
    await expect(ipam.requestPool(poolReq('10.14.0.0/16'))).rejects.toThrow(code('TSN_STORE'));
    expect((await store.all('pool'))[0]?.refs).toBe(1);
    failNext();
    await expect(ipam.releasePool(id)).rejects.toThrow(code('TSN_STORE'));
    expect(await addr(ipam, id)).toBe('10.14.0.1/16');
    await ipam.releasePool(id);
    expect(await snapshot(store)).toEqual({ pools: [], addresses: [] });
  });

  test('a failed release keeps the address allocated', async () => {
    const { store, failNext } = failingStore();
    const { ipam } = await setup({}, store);
    const id = await newPool(ipam, '10.15.0.0/24');
    await addr(ipam, id);
    failNext();
    await expect(ipam.releaseAddress(id, '10.15.0.1')).rejects.toThrow(code('TSN_STORE'));
    expect(await addr(ipam, id)).toBe('10.15.0.2/24');
    expect((await store.all('address')).map((a) => a.address)).toEqual(['10.15.0.1', '10.15.0.2']);
  });
});

describe('persistence', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-ipam-'));
  });
  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a second load over the same file sees every allocation', async () => {
    const file = path.join(dir, 'state.db');
    const first = await setup({}, new SqliteStore(file));
    const v4 = await newPool(first.ipam, '172.28.0.0/16', { subPool: '172.28.5.0/24' });
    const dyn = await first.ipam.requestPool(poolReq('', { v6: true }));
    await addr(first.ipam, v4, '', { [REQUEST_ADDRESS_TYPE]: GATEWAY_ADDRESS_TYPE });
    await addr(first.ipam, v4);
    await addr(first.ipam, v4, '172.28.1.1');
    await addr(first.ipam, dyn.poolId);
    await newPool(first.ipam, '172.28.0.0/16', { subPool: '172.28.5.0/24' }); // refs 2
    await first.store.close();

    const second = await setup({}, new SqliteStore(file));
    stores.push(second.store);
    expect(await addr(second.ipam, v4)).toBe('172.28.5.2/16');
    await expect(addr(second.ipam, v4, '172.28.1.1')).rejects.toThrow(code('TSN_ADDRESS_IN_USE'));
    await expect(addr(second.ipam, v4, '172.28.5.0')).rejects.toThrow(code('TSN_ADDRESS_IN_USE'));
    expect(await addr(second.ipam, dyn.poolId)).toBe('fd74:736e:6574::2/64');
    expect((await second.ipam.requestPool(poolReq('', { v6: true }))).pool).toBe('fd74:736e:6574:1::/64');
    await expect(second.ipam.requestPool(poolReq('172.28.9.0/24'))).rejects.toThrow(code('TSN_POOL_OVERLAP'));
    await second.ipam.releasePool(v4);
    expect(await addr(second.ipam, v4)).toBe('172.28.5.3/16'); // one reference left
    await second.ipam.releasePool(v4);
    await expect(addr(second.ipam, v4)).rejects.toThrow(code('TSN_UNKNOWN_POOL'));
  });

  test('address records that fit no pool are ignored on load', async () => {
    const store = memoryStore();
    await store.commit([
      {
        kind: 'put',
        collection: 'address',
        key: 'tsnet-local/9.9.9.0/24|9.9.9.1',
        value: { poolId: 'tsnet-local/9.9.9.0/24', address: '9.9.9.1', kind: 'address' },
      },
    ]);
    const { ipam } = await setup({}, store);
    expect(await addr(ipam, await newPool(ipam, '9.9.9.0/24'))).toBe('9.9.9.1/24');
  });

  test('a corrupt pool record fails the load with TSN_STORE', async () => {
    const store = memoryStore();
    await store.commit([
      {
        kind: 'put',
        collection: 'pool',
        key: 'bad',
        value: {
          id: 'bad',
          addressSpace: 'tsnet-local',
          pool: '10.0.0.0/99',
          v6: false,
          refs: 1,
          options: {},
          dynamic: false,
        },
      },
    ]);
    await expect(setup({}, store)).rejects.toThrow(code('TSN_STORE'));
  });
});
