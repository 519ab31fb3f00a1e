import type { ExecResult } from '../../src/kernel/exec';
import { noElements } from '../../src/kernel/firewall-render';
import { NftFirewall } from '../../src/kernel/nftables';

const TABLE = 'tsnet_hook';
const MARK = 0x2000000;
const OK: ExecResult = { code: 0, stdout: '', stderr: '' };
const NO_RULE: ExecResult = { code: 1, stdout: '', stderr: 'iptables: Bad rule (does a matching rule exist in that chain?).\n' };
const NO_CHAIN: ExecResult = { code: 1, stdout: '', stderr: 'iptables: No chain/target/match by that name.\n' };
const WANT = { networks: [{ bridge: 'tsbr-hook000001', internal: false, icc: true, masquerade: true }], ports: [], noIccPorts: [], host: { dockerBridges: [], forwardGuard: [] } };

/** dockerd 28's filter chains after its start (rule specs as `iptables -S` prints them, chain name left out). */
function dockerdChains(): Map<string, string[]> {
  return new Map([
    ['FORWARD', ['-j DOCKER-USER', '-j DOCKER-FORWARD']],
    ['DOCKER-USER', []],
    ['DOCKER-FORWARD', ['-i docker0 -j ACCEPT']],
  ]);
}

/**
 * A stand-in for iptables/ip6tables (unit tests never run them): per binary a filter table of chains holding rule
 * specs, with -S, -C, -I [n], -A, -D as iptables does them (the mark printed unpadded, as iptables prints it). nft
 * always succeeds. A binary without chains is a host whose dockerd runs with --iptables=false.
 */
function stubTables(bins: Record<string, Map<string, string[]>>) {
  const norm = (spec: string[]) => spec.join(' ').replace(/0x0*([0-9a-f]+)/g, '0x$1');
  const writes: string[] = [];
  const exec = (file: string, args: string[]): Promise<ExecResult> => {
    if (file === 'nft') return Promise.resolve(args[0] === '-j' ? { ...OK, stdout: '{"nftables": []}' } : OK);
    const chains = file in bins ? bins[file] : undefined;
    const [op, chain, ...rest] = args.slice(args.indexOf('filter') + 1);
    const rules = chains?.get(chain);
    if (!rules) return Promise.resolve(NO_CHAIN);
    if (op === '-S') return Promise.resolve({ ...OK, stdout: [chain === 'FORWARD' ? '-P FORWARD DROP' : `-N ${chain}`, ...rules.map((r) => `-A ${chain} ${r}`)].join('\n') + '\n' });
    const at = /^\d+$/.test(rest[0] ?? '') ? Number(rest.shift()) : undefined;
    const spec = norm(rest);
    const i = rules.indexOf(spec);
    if (op === '-C') return Promise.resolve(i >= 0 ? OK : NO_RULE);
    writes.push(`${file} ${op} ${chain}${at === undefined ? '' : ` ${at}`}`);
    if (op === '-D') {
      if (i < 0) return Promise.resolve(NO_RULE);
      rules.splice(i, 1);
    } else if (op === '-I') rules.splice((at ?? 1) - 1, 0, spec);
    else if (op === '-A') rules.push(spec);
    return Promise.resolve(OK);
  };
  return { exec, writes, bins };
}

/**
 * What iptables' filter FORWARD decides for a packet carrying tsnet's mark (every mark match matches), forwarded
 * between two of tsnet's bridges (so no `-i`/`-o` rule of dockerd matches it): rules run in order, jumps descend, the policy is DROP.
 */
function verdict(chains: Map<string, string[]>, chain = 'FORWARD'): 'ACCEPT' | 'DROP' | 'RETURN' {
  for (const spec of chains.get(chain) ?? []) {
    if (/(^| )-[io] /.test(spec)) continue;
    const target = / -j (\S+)$|^-j (\S+)$/.exec(spec);
    const to = target?.[1] ?? target?.[2];
    if (to === 'ACCEPT' || to === 'DROP') return to;
    if (to === 'REJECT') return 'DROP';
    if (to === 'RETURN') return 'RETURN';
    if (to !== undefined && verdict(chains, to) !== 'RETURN') return verdict(chains, to);
  }
  return chain === 'FORWARD' ? 'DROP' : 'RETURN';
}

/** dockerd's EnsureJumpRule at a network create or its start: delete the jump, then insert it first. */
function dockerdDeletesJump(chains: Map<string, string[]>): void {
  const forward = chains.get('FORWARD') ?? [];
  forward.splice(forward.indexOf('-j DOCKER-USER'), 1);
}
function dockerdInsertsJump(chains: Map<string, string[]>): void {
  chains.get('FORWARD')?.unshift('-j DOCKER-USER');
}

/** tsnet's rule spec, the same in both chains. */
const TSNET_RULE = `-m mark --mark 0x${MARK.toString(16)}/0x${MARK.toString(16)} -m comment --comment ${TABLE} -j ACCEPT`;

describe('NftFirewall: its mark-accept rule in DOCKER-USER and its twin in FORWARD', () => {
  test('tsnet\'s marked traffic is accepted while dockerd re-inserts its DOCKER-USER jump (the gap of every network create)', async () => {
    const ipt = stubTables({ iptables: dockerdChains(), ip6tables: dockerdChains() });
    const fw = new NftFirewall(MARK, TABLE, { exec: ipt.exec });
    await fw.sync(WANT);
    for (const chains of Object.values(ipt.bins)) {
      expect(verdict(chains)).toBe('ACCEPT');
      dockerdDeletesJump(chains);
      expect(verdict(chains)).toBe('ACCEPT'); // without the FORWARD twin: the DROP policy
      dockerdInsertsJump(chains);
      expect(verdict(chains)).toBe('ACCEPT');
    }
  });

  test('the twin goes right after dockerd\'s jump: DOCKER-USER (users\' rules in it) still decides first, a host\'s final REJECT after it', async () => {
    const chains = dockerdChains();
    chains.get('FORWARD')?.push('-j REJECT --reject-with icmp-host-prohibited');
    const userDrop = `-m mark --mark 0x${MARK.toString(16)}/0x${MARK.toString(16)} -j DROP`;
    const ipt = stubTables({ iptables: chains });
    const fw = new NftFirewall(MARK, TABLE, { exec: ipt.exec });
    await fw.sync(WANT);
    expect(chains.get('FORWARD')).toEqual(['-j DOCKER-USER', TSNET_RULE, '-j DOCKER-FORWARD', '-j REJECT --reject-with icmp-host-prohibited']);
    expect(chains.get('DOCKER-USER')).toEqual([TSNET_RULE]);
    dockerdDeletesJump(chains);
    expect(verdict(chains)).toBe('ACCEPT');
    dockerdInsertsJump(chains);
    // An operator's DROP put above tsnet's rule in DOCKER-USER still wins: the twin does not jump the queue.
    chains.get('DOCKER-USER')?.unshift(userDrop);
    expect(verdict(chains)).toBe('DROP');
  });

  test('started inside the gap (no jump yet): the twin goes first, and dockerd\'s insert puts its jump before it', async () => {
    const chains = dockerdChains();
    dockerdDeletesJump(chains);
    const ipt = stubTables({ iptables: chains });
    await new NftFirewall(MARK, TABLE, { exec: ipt.exec }).sync(WANT);
    dockerdInsertsJump(chains);
    expect(chains.get('FORWARD')).toEqual(['-j DOCKER-USER', TSNET_RULE, '-j DOCKER-FORWARD']);
  });

  test('only where dockerd\'s chains are: ip6tables without DOCKER-USER, or no dockerd firewall at all, gets no rule', async () => {
    const ip6 = new Map([['FORWARD', [] as string[]]]);
    const ipt = stubTables({ iptables: dockerdChains(), ip6tables: ip6 });
    await new NftFirewall(MARK, TABLE, { exec: ipt.exec }).sync(WANT);
    expect(ipt.writes).toEqual(['iptables -I DOCKER-USER 1', 'iptables -I FORWARD 2']);
    expect(ip6.get('FORWARD')).toEqual([]);
    const none = stubTables({});
    await new NftFirewall(MARK, TABLE, { exec: none.exec }).sync(WANT);
    expect(none.writes).toEqual([]);
  });

  test('a rebuild with both rules in place adds neither again', async () => {
    const chains = dockerdChains();
    const ipt = stubTables({ iptables: chains });
    const fw = new NftFirewall(MARK, TABLE, { exec: ipt.exec });
    await fw.sync(WANT);
    await fw.sync(WANT);
    expect(chains.get('FORWARD')?.filter((r) => r.includes(TABLE))).toHaveLength(1);
    expect(chains.get('DOCKER-USER')).toHaveLength(1);
  });

  test('two hook checks at once (a drift repair beside a link-watch rebuild) still add each rule once', async () => {
    const chains = dockerdChains();
    const ipt = stubTables({ iptables: chains });
    const fw = new NftFirewall(MARK, TABLE, { exec: ipt.exec });
    await Promise.all([fw.sync(WANT), fw.sync(WANT), fw.sync(WANT)]);
    expect(chains.get('FORWARD')?.filter((r) => r.includes(TABLE))).toHaveLength(1);
    expect(chains.get('DOCKER-USER')).toHaveLength(1);
  });

  test('inspect counts the hook missing when either rule is gone; the patch puts back just that one, in its place', async () => {
    const chains = dockerdChains();
    const ipt = stubTables({ iptables: chains, ip6tables: dockerdChains() });
    const fw = new NftFirewall(MARK, TABLE, { exec: ipt.exec });
    await fw.sync(WANT);
    expect((await fw.inspect()).hookMissing).toBe(false);
    const forward = chains.get('FORWARD') ?? [];
    forward.splice(forward.indexOf(TSNET_RULE), 1);
    expect((await fw.inspect()).hookMissing).toBe(true);
    ipt.writes.length = 0;
    await fw.sync(WANT, { add: noElements(), remove: noElements(), hook: true });
    expect(ipt.writes).toEqual(['iptables -I FORWARD 2']);
    expect(chains.get('FORWARD')).toEqual(['-j DOCKER-USER', TSNET_RULE, '-j DOCKER-FORWARD']);
    expect((await fw.inspect()).hookMissing).toBe(false);
    chains.set('DOCKER-USER', []);
    expect((await fw.inspect()).hookMissing).toBe(true);
  });

  test('removeBase takes both rules out of both binaries and leaves dockerd\'s own', async () => {
    const ipt = stubTables({ iptables: dockerdChains(), ip6tables: dockerdChains() });
    const fw = new NftFirewall(MARK, TABLE, { exec: ipt.exec });
    await fw.sync(WANT);
    await fw.removeBase();
    for (const chains of Object.values(ipt.bins)) expect(Object.fromEntries(chains)).toEqual(Object.fromEntries(dockerdChains()));
  });
});
