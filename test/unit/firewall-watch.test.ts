import type { ExecResult } from '../../src/kernel/exec';
import { baseShape } from '../../src/kernel/firewall-render';
import { FirewallWatcher, firewallEventMatters } from '../../src/kernel/firewall-watch';
import { NftFirewall } from '../../src/kernel/nftables';
import { EID, NID, NID2, netReq, setup } from './driver-fixtures';
import { StubMonitor } from './monitor-fixtures';


/** What `nft monitor` printed on this kernel (nftables 1.0.6) for iptables-nft and `nft flush ruleset`. */
const FLUSH_RULESET = [
  'delete rule ip filter DOCKER-USER handle 2',
  '# new generation 6 by process 12739 (iptables)',
  'delete chain ip filter DOCKER-USER',
  'delete table ip filter',
  'delete rule inet tsnet forward handle 4',
  'delete set inet tsnet bridges',
  'delete chain inet tsnet forward',
  'delete table inet tsnet',
  '# new generation 7 by process 12740 (nft)',
];

describe('which monitor lines mean tsnet may have lost part of its firewall', () => {
  test.each(FLUSH_RULESET.filter((l) => !l.startsWith('#')))('%s', (line) => expect(firewallEventMatters(line, 'tsnet')).toBe(true));

  test.each([
    // A restarted dockerd makes DOCKER-USER anew, without tsnet's rule.
    ['create chain ip filter DOCKER-USER', true],
    ['add chain ip6 filter DOCKER-USER', true],
    ['delete table bridge tsnet', true],
    ['flush set inet tsnet dnat4any', true],
    // tsnet's twin rule in FORWARD (dockerd deletes its own jump there at every network create: one cheap check).
    ['delete rule ip filter FORWARD handle 12', true],
    ['delete rule ip6 filter FORWARD handle 7', true],
    // tsnet's own element churn, other tables, other tsnets, additions.
    ['add element inet tsnet bridges { "x1" }', false],
    ['delete element inet tsnet dnat4any { tcp . 8080 }', false],
    ['delete table inet other', false],
    ['delete table inet tsnet2', false],
    ['add rule ip filter FORWARD counter jump DOCKER-USER', false],
    ['add table ip filter', false],
    ['add rule inet tsnet forward accept', false],
    ['# new generation 9 by process 1 (nft)', false],
    ['', false],
  ])('%s -> %s', (line, matters) => expect(firewallEventMatters(line, 'tsnet')).toBe(matters));
});

describe('the watcher', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  function watch() {
    const monitors: StubMonitor[] = [];
    let checks = 0;
    const watcher = new FirewallWatcher(
      'tsnet',
      async () => {
        checks++;
      },
      { debounceMs: 20, restartMs: 500, everyMs: 30_000, spawnMonitor: () => { const m = new StubMonitor(); monitors.push(m); return m; } },
    );
    return { watcher, monitors, checks: () => checks };
  }

  test('a flush ruleset (a burst of lines) causes one check; element churn none', () => {
    const t = watch();
    t.watcher.start();
    t.monitors[0].write('add element inet tsnet bridges { "x1" }\ndelete element inet tsnet dnat4any { tcp . 1 }\n');
    jest.advanceTimersByTime(1000);
    expect(t.checks()).toBe(0);
    t.monitors[0].write(FLUSH_RULESET.join('\n') + '\n');
    jest.advanceTimersByTime(20);
    expect(t.checks()).toBe(1);
    t.watcher.stop();
  });

  test('a monitor that dies (or cannot start) is restarted, and each restart is a check; a periodic check runs regardless', async () => {
    const t = watch();
    t.watcher.start();
    t.monitors[0].emit('error');
    t.monitors[0].emit('exit');
    await jest.advanceTimersByTimeAsync(500);
    expect(t.monitors).toHaveLength(2);
    expect(t.checks()).toBe(1);
    t.monitors[1].emit('exit');
    await jest.advanceTimersByTimeAsync(500);
    expect(t.monitors).toHaveLength(3);
    expect(t.checks()).toBe(2);
    await jest.advanceTimersByTimeAsync(30_000);
    expect(t.checks()).toBe(3);
    t.watcher.stop();
    expect(t.monitors[2].killed).toBe(true);
    await jest.advanceTimersByTimeAsync(120_000);
    expect(t.checks()).toBe(3);
    expect(t.monitors).toHaveLength(3);
  });
});

describe('driver.repairFirewall', () => {
  const SCTP = [{ proto: 'sctp' as const, port: 9, hostPort: 40009, hostPortEnd: 40009 }];

  async function published() {
    const t = await setup();
    await t.driver.createNetwork(netReq());
    await t.driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.2/16' }, options: {} });
    await t.driver.join({ networkId: NID, endpointId: EID, sandboxKey: '/var/run/docker/netns/abc', options: {} });
    await t.driver.programExternalConnectivity({ networkId: NID, endpointId: EID, portBindings: SCTP });
    return t;
  }

  test('after the ruleset was flushed, the table comes back with its networks and published ports', async () => {
    const { kernel, driver } = await published();
    const before = { networks: [...kernel.firewall.networks.entries()], ports: [...kernel.firewall.ports.entries()] };
    expect(before.ports).toHaveLength(1);
    kernel.firewall.lose();
    expect(await driver.repairFirewall()).toBe(true);
    expect(kernel.firewall.base).toBe(true);
    expect({ networks: [...kernel.firewall.networks.entries()], ports: [...kernel.firewall.ports.entries()] }).toEqual(before);
  });

  test('an intact firewall is only checked, unless forced (SIGHUP)', async () => {
    const { kernel, driver } = await published();
    kernel.firewall.calls.length = 0;
    expect(await driver.repairFirewall()).toBe(false);
    expect(kernel.firewall.calls).toEqual(['intact']);
    expect(await driver.repairFirewall(true)).toBe(true);
    // Forced: no cheap check, the sync itself, which reads everything and here finds nothing to change.
    expect(kernel.firewall.calls.slice(1)).toEqual(['inspect']);
  });

  test('with no network needing a firewall nothing is checked or made', async () => {
    const { kernel, driver } = await setup();
    expect(await driver.repairFirewall(true)).toBe(false);
    expect(kernel.firewall.calls).toEqual([]);
    expect(kernel.firewall.base).toBe(false);
  });

  test("a repair waits for a plugin call in flight on any network, so it never interleaves with the call's firewall change", async () => {
    const { kernel, driver } = await published();
    await driver.createNetwork(netReq({ networkId: NID2, ipv4: [{ addressSpace: 'tsnet-local', pool: '10.77.0.0/24', gateway: '10.77.0.1/24', auxAddresses: {} }] }));
    kernel.firewall.lose();
    // A CreateEndpoint on the second network is held inside its kernel steps (its network's lock is taken).
    const held = kernel.pauseAt((c) => c.call === 'apply' && c.change.op === 'veth.add');
    const created = driver.createEndpoint({ networkId: NID2, endpointId: 'e'.repeat(64), iface: { address: '10.77.0.2/24' }, options: {} });
    await held.reached;
    kernel.firewall.calls.length = 0;
    let repaired = false;
    const repair = driver.repairFirewall().then((r) => (repaired = r));
    await new Promise<void>((r) => setImmediate(r));
    expect(kernel.firewall.calls).toEqual([]);
    expect(repaired).toBe(false);
    held.release();
    await created;
    await repair;
    expect(repaired).toBe(true);
    expect(kernel.firewall.calls[0]).toBe('intact');
    expect(kernel.firewall.calls).toContain('sync');
    expect([...kernel.firewall.networks.keys()].sort()).toHaveLength(2);
  });
});

describe('NftFirewall.intact (the cheap check: no element is read)', () => {
  const TABLE = 'tsnet_unit';
  /** A table as `nft -t -j list table` reports it (no elements), in the base's shape; `drop`: one rule of that chain less. */
  function listing(family: 'inet' | 'bridge', drop?: string): string {
    const shape = baseShape()[family];
    const items = [
      { metainfo: { version: '1.0.6' } },
      { table: { family, name: TABLE } },
      ...shape.sets.map((name) => ({ set: { family, name, table: TABLE, type: 'ifname' } })),
      ...shape.maps.map((name) => ({ map: { family, name, table: TABLE, type: ['ipv4_addr'], map: 'ipv4_addr' } })),
      ...shape.chains.flatMap((c) => [
        { chain: { family, table: TABLE, name: c.name, type: c.type, hook: c.hook } },
        ...Array.from({ length: c.rules - (c.name === drop ? 1 : 0) }, () => ({ rule: { family, table: TABLE, chain: c.name, expr: [] } })),
      ]),
    ];
    return JSON.stringify({ nftables: items });
  }

  function stub(opts: { missing?: string; drop?: string; dockerUser?: boolean; hooked?: boolean }) {
    const calls: string[] = [];
    const exec = (file: string, args: string[]): Promise<ExecResult> => {
      calls.push(`${file} ${args.join(' ')}`);
      const res = (code: number, stdout = '') => Promise.resolve({ code, stdout, stderr: code ? 'Error: No such file or directory' : '' });
      if (file === 'nft') {
        const family = args[4] === 'bridge' ? 'bridge' : 'inet';
        return family === opts.missing ? res(1) : res(0, listing(family, family === 'inet' ? opts.drop : undefined));
      }
      // -S lists the chain: tsnet's rule (and its twin in FORWARD) are among its lines when hooked.
      const mark = '0x02000000/0x02000000';
      const chain = args[args.length - 1];
      if (chain === 'FORWARD') {
        const twin = opts.hooked ? `-A FORWARD -m mark --mark ${mark} -m comment --comment ${TABLE} -j ACCEPT\n` : '';
        return res(0, `-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n${twin}`);
      }
      return res(opts.dockerUser ? 0 : 1, opts.hooked ? `-N DOCKER-USER\n-A DOCKER-USER -m mark --mark ${mark} -m comment --comment ${TABLE} -j ACCEPT\n` : '-N DOCKER-USER\n');
    };
    return { fw: new NftFirewall(0x2000000, TABLE, { exec }), calls };
  }

  test('everything in place, with and without a DOCKER-USER chain', async () => {
    expect(await stub({}).fw.intact()).toBe(true);
    expect(await stub({ dockerUser: true, hooked: true }).fw.intact()).toBe(true);
  });

  test.each([
    ['the inet table is gone', { missing: 'inet' }],
    ['the bridge table is gone', { missing: 'bridge' }],
    ['a rule of the forward chain is gone', { drop: 'forward' }],
    ['DOCKER-USER exists without tsnet\'s rule', { dockerUser: true, hooked: false }],
  ])('%s: not intact', async (_what, opts) => {
    expect(await stub(opts).fw.intact()).toBe(false);
  });

  test('only terse listings are read (no elements, whatever the number of endpoints)', async () => {
    const s = stub({});
    await s.fw.intact();
    expect(s.calls.filter((c) => c.startsWith('nft'))).toEqual([`nft -t -j list table inet ${TABLE}`, `nft -t -j list table bridge ${TABLE}`]);
  });
});
