import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runSteps } from '../../src/driver/steps';
import { TsnetError } from '../../src/errors';
import { type KernelChange, KernelChangeError } from '../../src/kernel/contract';
import { FakeFirewall } from '../../src/kernel/fake';
import { renderNetwork, renderPorts } from '../../src/kernel/firewall-render';
import type { BatchFailure } from '../../src/kernel/ip-session';
import { Iproute2Kernel } from '../../src/kernel/iproute2';

/**
 * The kernel layer refuses any token that could end a command or start another (whitespace, newline, '#', quotes,
 * backslash, ';', braces) before anything is written to ip or nft, whatever the layers above let through. The ip
 * process is a stub that records what it was sent and fails the lines it is told to.
 */
class StubSession {
  readonly batches: string[][] = [];
  /** Per batch (in order): the failure to report, if any. */
  readonly failures: Array<BatchFailure | undefined> = [];

  run(lines: string[]): Promise<BatchFailure | undefined> {
    this.batches.push(lines);
    return Promise.resolve(this.failures.shift());
  }
  renewals = 0;
  renew(): Promise<void> {
    this.renewals++;
    return Promise.resolve();
  }
  close(): void {}
}

// Safety net: should a kernel ever bypass its stub session, `ip` is not found instead of changing the host.
const savedPath = process.env.PATH;
beforeAll(() => {
  process.env.PATH = '/nonexistent-tsnet-kernel-guard';
});
afterAll(() => {
  process.env.PATH = savedPath;
});

function kernelWithStub(): { kernel: Iproute2Kernel; session: StubSession } {
  const session = new StubSession();
  return { kernel: new Iproute2Kernel(new FakeFirewall(), 'tsnet:test', { newSession: () => session }), session };
}

async function internalError(p: Promise<unknown>): Promise<TsnetError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TsnetError);
  expect((err as TsnetError).code).toBe('TSN_INTERNAL');
  return err as TsnetError;
}

describe('ip -batch lines are built from checked tokens', () => {
  test('well-formed changes become one line per command, tokens joined by single spaces', async () => {
    const { kernel, session } = kernelWithStub();
    await kernel.apply([
      { op: 'bridge.add', name: 'tsbr-1', mtu: 1400, mac: '02:42:ac:11:00:01' },
      { op: 'addr.add', dev: 'tsbr-1', cidr: 'fd00:1::1/64' },
    ]);
    expect(session.batches).toEqual([
      [
        'link add name tsbr-1 mtu 1400 address 02:42:ac:11:00:01 type bridge',
        'link set dev tsbr-1 alias tsnet:test',
        'addr add fd00:1::1/64 dev tsbr-1 nodad',
      ],
    ]);
  });

  test('child links, VLAN and dummy parents and routes: their ip lines, each new link stamped with the owner tag', async () => {
    const { kernel, session } = kernelWithStub();
    await kernel.apply([
      { op: 'vlan.add', name: 'eth1.10', parent: 'eth1', vlanId: 10 },
      { op: 'dummy.add', name: 'tsdm-aaaaaaaaaa' },
      { op: 'macvlan.add', name: 'tsmbbbbbbbbbbbb', parent: 'eth1.10', mode: 'bridge', mac: '02:42:c0:a8:0a:05' },
      { op: 'ipvlan.add', name: 'tsibbbbbbbbbbbb', parent: 'eth2', mode: 'l3s', flag: 'private' },
      { op: 'route.add', dst: '192.168.10.5/32', dev: 'tshs-aaaaaaaaaa' },
      { op: 'route.del', dst: 'fd00::5/128', dev: 'tshs-aaaaaaaaaa' },
    ]);
    expect(session.batches).toEqual([
      [
        'link add link eth1 name eth1.10 type vlan id 10',
        'link set dev eth1.10 alias tsnet:test',
        'link add name tsdm-aaaaaaaaaa type dummy',
        'link set dev tsdm-aaaaaaaaaa alias tsnet:test',
        'link add link eth1.10 name tsmbbbbbbbbbbbb address 02:42:c0:a8:0a:05 type macvlan mode bridge',
        'link set dev tsmbbbbbbbbbbbb alias tsnet:test',
        'link add link eth2 name tsibbbbbbbbbbbb type ipvlan mode l3s private',
        'link set dev tsibbbbbbbbbbbb alias tsnet:test',
        'route add 192.168.10.5/32 dev tshs-aaaaaaaaaa',
        'route del fd00::5/128 dev tshs-aaaaaaaaaa',
      ],
    ]);
  });

  test.each<[string, KernelChange]>([
    [
      'newline and extra commands in an address',
      { op: 'addr.add', dev: 'tsbr-1', cidr: '172.28.5.254/16 dev lo\nnetns add x\nnetns exec x /bin/sh -c id' },
    ],
    ['a space in a link name', { op: 'link.up', name: 'tsbr-1 down' }],
    ['a comment sign', { op: 'link.del', name: 'tsbr#1' }],
    ['a double quote', { op: 'link.master', name: 'tsv1', master: 'br"0' }],
    ['a single quote', { op: 'addr.del', dev: "br'0", cidr: '10.0.0.1/24' }],
    ['a backslash', { op: 'veth.add', name: 'tsv1', peer: 'tsc1\\n' }],
    ['a tab in a MAC', { op: 'veth.add', name: 'tsv1', peer: 'tsc1', peerMac: '02:42:ac:11:00:02\tx' }],
    ['an empty name', { op: 'link.up', name: '' }],
  ])('%s: TSN_INTERNAL and nothing written, not even the valid changes before it', async (_what, bad) => {
    const { kernel, session } = kernelWithStub();
    const err = await internalError(kernel.apply([{ op: 'link.up', name: 'tsbr-ok' }, bad]));
    expect(err.message).toMatch(/refusing/);
    expect(err.message).not.toMatch(/\n/);
    expect(session.batches).toEqual([]);
  });

  test('a bad owner tag is refused as well', async () => {
    const session = new StubSession();
    const kernel = new Iproute2Kernel(new FakeFirewall(), 'tsnet:a b', { newSession: () => session });
    await internalError(kernel.apply([{ op: 'bridge.add', name: 'tsbr-1' }]));
    expect(session.batches).toEqual([]);
  });

  test.each(['net/ipv4/conf/../../../../etc/passwd', 'net/ipv6/conf//disable_ipv6', 'net/ipv4/conf/a b/forwarding', '/nonexistent-tsnet-test/x'])(
    'sysctl key %j is refused before any write',
    async (key) => {
      const { kernel } = kernelWithStub();
      await internalError(kernel.apply([{ op: 'sysctl.set', key, value: '1' }]));
    },
  );
});

describe('sysctl root', () => {
  test('writes and reads go under the configured root (a managed plugin: the host /proc mounted elsewhere), never /proc/sys', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-sysctl-'));
    try {
      fs.mkdirSync(path.join(root, 'net/ipv4'), { recursive: true });
      fs.writeFileSync(path.join(root, 'net/ipv4/ip_forward'), '0\n');
      const session = new StubSession();
      const kernel = new Iproute2Kernel(new FakeFirewall(), 'tsnet:test', { newSession: () => session, sysctlRoot: root });
      expect(await kernel.readSysctl('net/ipv4/ip_forward')).toBe('0');
      await kernel.apply([{ op: 'sysctl.set', key: 'net/ipv4/ip_forward', value: '1' }]);
      expect(fs.readFileSync(path.join(root, 'net/ipv4/ip_forward'), 'utf8')).toBe('1');
      // The background lane shares the root.
      expect(await kernel.background.readSysctl('net/ipv4/ip_forward')).toBe('1');
      // A key the root lacks is absent there even if /proc/sys has it.
      expect(await kernel.readSysctl('net/core/somaxconn')).toBeUndefined();
      await expect(kernel.apply([{ op: 'sysctl.set', key: 'net/ipv4/conf/nonexistent/forwarding', value: '1' }])).rejects.toThrow(/sysctl/);
      expect(session.batches).toEqual([]);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('a change whose first line applied counts as applied (item 18)', () => {
  test('veth.add failing at its alias line: KernelChangeError counts it, so it is undone', async () => {
    const { kernel, session } = kernelWithStub();
    session.failures.push({ index: 2, reason: 'RTNETLINK answers: Operation not permitted' });
    const veth: KernelChange = { op: 'veth.add', name: 'tsv1', peer: 'tsc1' };
    const err = await kernel.apply([{ op: 'link.up', name: 'tsbr-1' }, veth, { op: 'link.up', name: 'tsv1' }]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(KernelChangeError);
    expect((err as KernelChangeError).change).toEqual(veth);
    expect((err as KernelChangeError).index).toBe(1);
    expect((err as KernelChangeError).applied).toBe(2);
  });

  test('a change failing at its first line is not counted', async () => {
    const { kernel, session } = kernelWithStub();
    session.failures.push({ index: 1, reason: 'RTNETLINK answers: File exists' });
    const err = (await kernel
      .apply([
        { op: 'link.up', name: 'tsbr-1' },
        { op: 'bridge.add', name: 'tsbr-2' },
      ])
      .catch((e: unknown) => e)) as KernelChangeError;
    expect(err).toBeInstanceOf(KernelChangeError);
    expect(err.applied).toBe(1);
  });

  test('runSteps rolls back a bridge whose alias line failed', async () => {
    const { kernel, session } = kernelWithStub();
    session.failures.push({ index: 1, reason: 'RTNETLINK answers: Operation not permitted' });
    await expect(
      runSteps(kernel, 'network x', [
        { name: 'create bridge', changes: [{ op: 'bridge.add', name: 'tsbr-1' }] },
        { name: 'bridge up', changes: [{ op: 'link.up', name: 'tsbr-1' }] },
      ]),
    ).rejects.toThrow(expect.objectContaining({ code: 'TSN_KERNEL', message: expect.stringContaining('create bridge') }));
    expect(session.batches[1]).toEqual(['link del dev tsbr-1']);
  });
});

describe('nft element strings are built from checked values', () => {
  const net = (bridge: string) => ({ bridge, internal: false, icc: false, masquerade: true });
  const port = (over: object) => ({ proto: 'tcp' as const, hostPort: 8080, containerIp: '172.30.0.2', containerPort: 80, ...over });

  test('bridge names are quoted', () => {
    expect(renderNetwork('add', net('tsbr-1'))).toContain('add element inet tsnet bridges { "tsbr-1" }');
  });

  test.each([
    ['a bridge name closing the set', () => renderNetwork('add', net('x" }\nflush ruleset\nadd element inet tsnet bridges { "y'))],
    ['a bridge name with a backslash', () => renderNetwork('delete', net('br\\'))],
    ['a host IP with a statement after it', () => renderPorts('add', [port({ hostIp: '1.2.3.4 . tcp . 1 : 5.6.7.8 . 1 }; flush ruleset; #' })])],
    ['a container IP with a newline', () => renderPorts('add', [port({ containerIp: '172.30.0.2\nflush ruleset' })])],
    ['a table name with a space', () => renderNetwork('add', net('tsbr-1'), 'tsnet x')],
  ])('%s is refused with TSN_INTERNAL', (_what, render) => {
    expect(render).toThrow(expect.objectContaining({ code: 'TSN_INTERNAL' }));
  });
});

describe('ip sessions never act on a stale name', () => {
  test("a lane's ip starts afresh after the other lane deleted links, and after a No such device", async () => {
    const sessions: StubSession[] = [];
    const kernel = new Iproute2Kernel(new FakeFirewall(), 'tsnet:test', {
      newSession: () => {
        const s = new StubSession();
        sessions.push(s);
        return s;
      },
    });
    await kernel.apply([{ op: 'vlan.add', name: 'eth1.10', parent: 'eth1', vlanId: 10 }]);
    const [main] = sessions;
    // The background lane deletes the VLAN; the main lane's ip may still hold its old index.
    await kernel.background.apply([{ op: 'link.del', name: 'eth1.10' }]);
    const background = sessions[1];
    expect(main.renewals).toBe(0);
    await kernel.apply([{ op: 'vlan.add', name: 'eth1.10', parent: 'eth1', vlanId: 10 }]);
    expect(main.renewals).toBe(1);
    // Its own deletions it knows about; nothing changed since: no new process.
    await kernel.apply([{ op: 'link.up', name: 'eth1.10' }]);
    expect(main.renewals).toBe(1);
    expect(background.renewals).toBe(0);
    main.failures.push({ index: 0, reason: 'RTNETLINK answers: No such device' });
    await expect(kernel.apply([{ op: 'link.up', name: 'eth1.10' }])).rejects.toThrow(/No such device/);
    expect(main.renewals).toBe(2);
  });
});
