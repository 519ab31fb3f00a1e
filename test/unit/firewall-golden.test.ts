import { spawnSync } from 'child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import path from 'path';
import type { FwHost, FwNetwork, FwPort } from '../../src/kernel/contract';
import { DEFAULT_TABLE, NO_HOST, renderBase, renderDockerBridges, renderForwardGuard, renderFull, renderNoIccPorts, renderNetwork, renderPorts } from '../../src/kernel/firewall-render';

const TABLE = `inet ${DEFAULT_TABLE}`;
/** The published-port accept, guarded on both sides against internal networks. */
const DNAT_ACCEPT = 'iifname != @internal oifname != @internal oifname @bridges ct status dnat ';

/**
 * Golden files of tsnet's nftables ruleset, one pair per option combination (like moby's
 * `TestIptabler/<flags>__iptables.golden`): `<scenario>.full.nft` is what a start (sync) applies,
 * `<scenario>.steps.nft` the incremental transactions of network create, port publish, port unpublish, network delete.
 *
 *   UPDATE_GOLDEN=1 npx jest test/unit/firewall-golden.test.ts   rewrites them (review the diff before keeping it)
 *
 * The invariant tests below say why a ruleset is wrong; the golden files only say that it changed.
 */

const MARK = 0x2000000;
const MARK_HEX = '0x02000000';
const GOLDEN_DIR = path.join(__dirname, '..', 'golden', 'firewall');
const UPDATE = process.env.UPDATE_GOLDEN === '1';
const THIS_FILE = 'test/unit/firewall-golden.test.ts';

interface Scenario {
  name: string;
  networks: FwNetwork[];
  ports: FwPort[];
  /** Docker bridges on the host and forward guards (none when absent). */
  host?: FwHost;
  /** Bridge ports of icc=false networks. */
  noIccPorts?: string[];
}

const BR1 = 'tsbr-0123456789';
const BR2 = 'tsbr-abcdefabcd';

function net(over: Partial<FwNetwork> = {}): FwNetwork {
  return { bridge: BR1, internal: false, icc: true, masquerade: true, ...over };
}

const C4 = '172.30.0.2';
const C6 = 'fd00:30::2';

function port(over: Partial<FwPort> = {}): FwPort {
  return { proto: 'tcp', hostPort: 8080, containerIp: C4, containerPort: 80, ...over };
}

const SCENARIOS: Scenario[] = [
  { name: 'default', networks: [net()], ports: [] },
  { name: 'internal', networks: [net({ internal: true })], ports: [] },
  { name: 'icc-off', networks: [net({ icc: false })], ports: [], noIccPorts: ['tsv0123456789a', 'tsv0123456789b'] },
  { name: 'no-masquerade', networks: [net({ masquerade: false })], ports: [] },
  { name: 'internal-icc-off', networks: [net({ internal: true, icc: false })], ports: [] },
  { name: 'ports-any-host', networks: [net()], ports: [port()] },
  { name: 'ports-host-ip', networks: [net()], ports: [port({ hostIp: '192.0.2.10' })] },
  {
    name: 'ports-localhost',
    networks: [net()],
    ports: [port({ hostIp: '127.0.0.1' }), port({ hostIp: '::1', containerIp: C6 })],
  },
  {
    name: 'ports-ipv6',
    networks: [net()],
    ports: [
      port({ containerIp: C6 }),
      port({ hostIp: '2001:db8::10', hostPort: 8443, containerIp: C6, containerPort: 443 }),
      port({ proto: 'udp', hostIp: '2001:db8::10', hostPort: 5353, containerIp: C6, containerPort: 53 }),
    ],
  },
  {
    name: 'ports-dual-stack',
    networks: [net()],
    ports: [port(), port({ containerIp: C6 })],
  },
  {
    name: 'ports-mixed-protocols',
    networks: [net()],
    ports: [
      port({ proto: 'tcp', hostPort: 5000, containerPort: 5000 }),
      port({ proto: 'udp', hostPort: 5000, containerPort: 5000 }),
      port({ proto: 'sctp', hostPort: 5000, containerPort: 5000 }),
    ],
  },
  {
    name: 'ports-several',
    networks: [net()],
    ports: [
      port({ hostPort: 8000, containerPort: 80 }),
      port({ hostPort: 8001, containerPort: 81 }),
      port({ hostPort: 8002, containerPort: 82 }),
      port({ hostIp: '192.0.2.10', hostPort: 9000, containerIp: '172.30.0.3', containerPort: 9000 }),
      port({ proto: 'udp', hostIp: '127.0.0.1', hostPort: 9001, containerIp: '172.30.0.3', containerPort: 9001 }),
    ],
  },
  {
    name: 'ports-no-masquerade',
    networks: [net({ masquerade: false })],
    ports: [port()],
  },
  {
    name: 'two-networks',
    networks: [net(), net({ bridge: BR2, icc: false, masquerade: false })],
    ports: [port(), port({ containerIp: C6 }), port({ proto: 'udp', hostIp: '192.0.2.10', hostPort: 53, containerIp: '10.99.0.5', containerPort: 53 })],
  },
  {
    name: 'two-networks-internal',
    networks: [net(), net({ bridge: BR2, internal: true })],
    ports: [port()],
  },
  {
    name: 'host-docker-bridges-guard',
    networks: [net()],
    ports: [port()],
    host: { dockerBridges: ['docker0', 'br-0123456789ab'], forwardGuard: ['ipv4', 'ipv6'] },
  },
];

function full(s: Scenario): string {
  return renderFull(MARK, s.networks, s.ports, DEFAULT_TABLE, s.host ?? NO_HOST, s.noIccPorts ?? []);
}

/** Network create, port publish, port unpublish, network delete: each section one `nft -f` transaction. */
function renderSteps(s: Scenario): string {
  const sections: Array<[header: string, lines: string[]]> = [
    ...s.networks.map((n): [string, string[]] => [`network add ${n.bridge}`, renderNetwork('add', n)]),
    ['ports add', renderPorts('add', s.ports)],
    ['ports delete', renderPorts('delete', s.ports)],
    ...[...s.networks].reverse().map((n): [string, string[]] => [`network delete ${n.bridge}`, renderNetwork('delete', n)]),
  ];
  return sections.map(([header, lines]) => [`# ${header}`, ...lines].join('\n')).join('\n\n');
}

function withNewline(text: string): string {
  return text.endsWith('\n') ? text : `${text}\n`;
}

function expectGolden(file: string, actual: string): void {
  const full = path.join(GOLDEN_DIR, file);
  const content = withNewline(actual);
  if (UPDATE) {
    mkdirSync(GOLDEN_DIR, { recursive: true });
    writeFileSync(full, content);
    return;
  }
  if (!existsSync(full)) {
    throw new Error(
      `golden file test/golden/firewall/${file} is missing; create it with ` +
        `UPDATE_GOLDEN=1 npx jest ${THIS_FILE} and review it before committing`,
    );
  }
  expect(content).toBe(readFileSync(full, 'utf8'));
}

interface Element {
  op: 'add' | 'delete';
  set: string;
  items: string[];
}

const ELEMENT_RE = /^(add|delete) element inet tsnet ([a-z0-9]+) \{ (.+) \}$/;

function parseElement(line: string): Element {
  const m = ELEMENT_RE.exec(line);
  if (!m) throw new Error(`not an element line: ${line}`);
  return { op: m[1] === 'add' ? 'add' : 'delete', set: m[2], items: m[3].split(', ') };
}

/** Items per set of element lines (a set absent means no line for it). */
function elementsBySet(lines: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const l of lines) {
    const e = parseElement(l);
    out.set(e.set, [...(out.get(e.set) ?? []), ...e.items]);
  }
  return out;
}

/** `add rule inet tsnet <chain> <rule>` lines of a script, grouped by chain. */
function rulesByChain(script: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const l of script.split('\n')) {
    const m = /^add rule inet tsnet (\S+) (.+)$/.exec(l);
    if (m) out.set(m[1], [...(out.get(m[1]) ?? []), m[2]]);
  }
  return out;
}

function manyPorts(n: number): FwPort[] {
  return Array.from({ length: n }, (_, i) => port({ hostPort: 10000 + i, containerIp: `172.30.${Math.floor(i / 250)}.${(i % 250) + 2}` }));
}

function manyNetworks(n: number): FwNetwork[] {
  return Array.from({ length: n }, (_, i) => net({ bridge: `tsbr-${String(i).padStart(10, '0')}` }));
}

describe('firewall golden files', () => {
  test('scenario names are unique and file-name safe', () => {
    const names = SCENARIOS.map((s) => s.name);
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) expect(n).toMatch(/^[a-z0-9-]+$/);
  });

  for (const s of SCENARIOS) {
    describe(s.name, () => {
      test('full ruleset', () => expectGolden(`${s.name}.full.nft`, full(s)));
      test('incremental steps', () => expectGolden(`${s.name}.steps.nft`, renderSteps(s)));
    });
  }

  test('no golden file without a scenario', () => {
    if (!existsSync(GOLDEN_DIR)) return;
    const expected = new Set(SCENARIOS.flatMap((s) => [`${s.name}.full.nft`, `${s.name}.steps.nft`]));
    const orphans = readdirSync(GOLDEN_DIR).filter((f) => !expected.has(f));
    expect(orphans).toEqual([]);
  });
});

test('another table name renders the same ruleset in that table (a second tsnet on one host)', () => {
  const n = { bridge: 'tsbr-x', internal: false, icc: true, masquerade: true };
  const p = [{ proto: 'tcp' as const, hostPort: 80, containerIp: '10.0.0.2', containerPort: 80 }];
  const other = renderFull(0x2000000, [n], p, 'tsnet_b');
  const renamed = renderFull(0x2000000, [n], p).replace(/(inet|bridge) tsnet( |$)/gm, '$1 tsnet_b$2');
  expect(other).toBe(renamed);
  expect(other).not.toMatch(/(inet|bridge) tsnet( |$)/m);
});

describe('firewall ruleset invariants', () => {
  const base = renderBase(MARK);
  const baseLines = base.split('\n');

  test('every accept in the forward chain carries the DOCKER-USER mark, and only there', () => {
    const rules = rulesByChain(base);
    const forward = rules.get('forward') ?? [];
    const accepts = forward.filter((r) => /\baccept$/.test(r));
    // One marked rule per accept path: established replies, same network, published (DNAT) traffic, outbound.
    expect(accepts).toHaveLength(4);
    for (const r of accepts) expect(r).toMatch(new RegExp(`meta mark set meta mark or ${MARK_HEX} accept$`));
    expect(new Set(accepts).size).toBe(accepts.length);
    expect(accepts.filter((r) => r.startsWith('oifname @bridges ct state established,related '))).toHaveLength(1);
    expect(accepts.filter((r) => r.startsWith('iifname . oifname @pairs '))).toHaveLength(1);
    expect(accepts.filter((r) => r.startsWith(DNAT_ACCEPT))).toHaveLength(1);
    expect(accepts.filter((r) => r.startsWith('iifname @bridges meta mark'))).toHaveLength(1);
    // The mark is set nowhere but on those accepts (nothing else reaches DOCKER-USER's final accept).
    expect(baseLines.filter((l) => l.includes(`meta mark set meta mark or ${MARK_HEX}`))).toHaveLength(4);
    // Read in one place only: the bridge-family icc=false drop lets through what the forward chain accepted.
    expect(baseLines.filter((l) => l.includes(MARK_HEX) && !l.includes('meta mark set'))).toEqual([
      `add rule bridge tsnet forward meta protocol { ip, ip6 } iifname @noiccports oifname @noiccports meta mark and ${MARK_HEX} != ${MARK_HEX} drop`,
    ]);
    for (const [chain, rs] of rules) {
      if (chain !== 'forward') for (const r of rs) expect(r).not.toContain('meta mark');
    }
  });

  test('loopback destinations from anywhere but lo, and loopback sources from containers, drop before DNAT', () => {
    const rules = rulesByChain(base);
    expect(rules.get('localnet')).toEqual([
      'ip daddr 127.0.0.0/8 iifname != "lo" drop',
      'ip6 daddr ::1 iifname != "lo" drop',
      'ip saddr 127.0.0.0/8 iifname @bridges drop',
      'iifname @internal fib daddr type local fib saddr . iif oif missing drop',
    ]);
    // raw (-300) runs before conntrack and before the dstnat (-100) DNAT of published ports.
    expect(base).toContain(`add chain ${TABLE} localnet { type filter hook prerouting priority raw; policy accept; }`);
    expect(base).toContain(`add chain ${TABLE} prerouting { type nat hook prerouting priority dstnat; policy accept; }`);
  });

  test('no interface name glob anywhere: Docker bridges are an exact set, a br-lan uplink is not cut', () => {
    expect(base).not.toMatch(/"[^"]*\*"/);
    expect(renderDockerBridges(['docker0', 'br-0123456789ab'])).toEqual([
      `flush set ${TABLE} dockerbr`,
      `add element ${TABLE} dockerbr { "docker0", "br-0123456789ab" }`,
    ]);
    expect(renderDockerBridges([])).toEqual([`flush set ${TABLE} dockerbr`]);
  });

  test('icc=false without br_netfilter: a bridge-family chain after br_netfilter\'s hooks drops frames between listed ports', () => {
    expect(base).toContain('add chain bridge tsnet forward { type filter hook forward priority 100; policy accept; }');
    expect(renderNoIccPorts('add', ['tsvaaaaaaaaaaaa'])).toEqual(['add element bridge tsnet noiccports { "tsvaaaaaaaaaaaa" }']);
    expect(renderNoIccPorts('delete', [])).toEqual([]);
    expect(renderFull(MARK, [], [])).toContain('flush set bridge tsnet noiccports');
  });

  test('the forward guard is per family and off unless the host state turns it on', () => {
    expect(renderForwardGuard('ipv6')).toEqual([`add element ${TABLE} fwdguard { ipv6 }`]);
    for (const s of SCENARIOS) if (!s.host) expect(full(s)).not.toContain('element inet tsnet fwdguard');
  });

  test('the mark is rendered as a 32-bit hex constant', () => {
    expect(renderBase(0x1)).toContain('meta mark or 0x00000001 accept');
    expect(renderBase(0x80000000)).toContain('meta mark or 0x80000000 accept');
  });

  test('isolation drops come after the accepts they must not shadow and before the outbound accept', () => {
    const fwd = rulesByChain(base).get('forward') ?? [];
    const idx = (prefix: string): number => {
      const i = fwd.findIndex((r) => r.startsWith(prefix));
      expect(i).toBeGreaterThanOrEqual(0);
      return i;
    };
    const noicc = idx('iifname . oifname @pairs iifname @noicc drop');
    const sameNet = idx('iifname . oifname @pairs meta mark');
    const outbound = idx('iifname @bridges meta mark');
    expect(noicc).toBeLessThan(sameNet);
    for (const drop of ['iifname @internal drop', 'oifname @internal drop', 'oifname @bridges drop', 'iifname @bridges oifname @dockerbr drop']) {
      expect(idx(drop)).toBeLessThan(outbound);
    }
    // The forward guard is the last word: everything involving a tsnet bridge was decided before it.
    expect(fwd[fwd.length - 1]).toBe('meta nfproto @fwdguard iifname != @dockerbr oifname != @dockerbr drop');
    expect(idx('oifname @bridges drop')).toBeLessThan(fwd.length - 1);
    // Published ports stay reachable from members of an icc=false network (as through Docker's proxy), but the
    // accept can never carry traffic into or out of an internal network.
    expect(idx(DNAT_ACCEPT)).toBeLessThan(noicc);
  });

  test('every chain is flushed right after it is declared and before its rules (idempotent base)', () => {
    const chains = baseLines.filter((l) => l.startsWith(`add chain ${TABLE} `)).map((l) => l.split(' ')[4]);
    expect(chains).toEqual(['prerouting', 'output', 'postrouting', 'localnet', 'forward']);
    for (const c of chains) {
      const decl = baseLines.findIndex((l) => l.startsWith(`add chain ${TABLE} ${c} `));
      expect(decl).toBeGreaterThanOrEqual(0);
      expect(baseLines[decl + 1]).toBe(`flush chain ${TABLE} ${c}`);
      const ruleIdx = baseLines.flatMap((l, i) => (l.startsWith(`add rule ${TABLE} ${c} `) ? [i] : []));
      expect(ruleIdx.length).toBeGreaterThan(0);
      for (const i of ruleIdx) expect(i).toBeGreaterThan(decl + 1);
    }
    // Nothing that fails when it already exists (create, insert) or when it is missing (delete).
    for (const l of baseLines) expect(l).toMatch(/^(add|flush) /);
  });

  test('the full ruleset empties every set and map before refilling it', () => {
    const full = renderFull(MARK, [net()], [port()]).split('\n');
    const declared = full.flatMap((l) => {
      const m = /^add (set|map) inet tsnet (\S+) /.exec(l);
      return m ? [[m[1], m[2]] as const] : [];
    });
    expect(declared.map(([, n]) => n).sort()).toEqual(['bridges', 'dnat4', 'dnat4any', 'dnat6', 'dnat6any', 'dockerbr', 'fwdguard', 'internal', 'masq', 'noicc', 'pairs']);
    const firstElement = full.findIndex((l) => l.includes(' element '));
    expect(firstElement).toBeGreaterThan(0);
    for (const [kind, n] of declared) {
      const flush = full.indexOf(`flush ${kind} ${TABLE} ${n}`);
      expect(flush).toBeGreaterThan(full.findIndex((l) => l.startsWith(`add ${kind} ${TABLE} ${n} `)));
      expect(flush).toBeLessThan(firstElement);
    }
  });

  test('the full ruleset is the base followed by exactly the incremental adds', () => {
    for (const s of SCENARIOS) {
      const script = full(s);
      expect(script.startsWith(`${base}\n`)).toBe(true);
      const elements = script.split('\n').filter((l) => l.includes(' element '));
      const host = s.host ?? NO_HOST;
      expect(elements).toEqual([
        ...renderDockerBridges(host.dockerBridges).filter((l) => l.includes(' element ')),
        ...renderNoIccPorts('add', s.noIccPorts ?? []),
        ...host.forwardGuard.flatMap((f) => renderForwardGuard(f)),
        ...s.networks.flatMap((n) => renderNetwork('add', n)),
        ...renderPorts('add', s.ports),
      ]);
    }
  });

  test('network elements follow the options (internal, icc, masquerade)', () => {
    for (const s of SCENARIOS) {
      for (const n of s.networks) {
        const sets = elementsBySet(renderNetwork('add', n));
        const br = `"${n.bridge}"`;
        const nat = n.masquerade && !n.internal;
        const want = new Map<string, string[]>([
          ['bridges', [br]],
          ['pairs', [`${br} . ${br}`]],
        ]);
        if (!n.icc) want.set('noicc', [br]);
        if (n.internal) want.set('internal', [br]);
        if (nat) want.set('masq', [br]);
        expect({ scenario: s.name, bridge: n.bridge, sets: Object.fromEntries(sets) }).toEqual({
          scenario: s.name,
          bridge: n.bridge,
          sets: Object.fromEntries(want),
        });
      }
    }
  });

  test('ports go to dnat4/dnat6 keyed by host address when bound, to dnat4any/dnat6any otherwise', () => {
    for (const s of SCENARIOS) {
      for (const p of s.ports) {
        const v6 = p.containerIp.includes(':');
        // The scenario data itself: a bound host address is of the container address's family.
        if (p.hostIp !== undefined) expect(p.hostIp.includes(':')).toBe(v6);
        const [add] = renderPorts('add', [p]).map(parseElement);
        const [del] = renderPorts('delete', [p]).map(parseElement);
        const key = `${p.hostIp === undefined ? '' : `${p.hostIp} . `}${p.proto} . ${p.hostPort}`;
        const set = `dnat${v6 ? '6' : '4'}${p.hostIp === undefined ? 'any' : ''}`;
        expect(add).toEqual({ op: 'add', set, items: [`${key} : ${p.containerIp} . ${p.containerPort}`] });
        expect(del).toEqual({ op: 'delete', set, items: [key] });
      }
    }
  });

  test('a network delete is exactly its add with add → delete', () => {
    for (const s of SCENARIOS) {
      for (const n of s.networks) {
        const add = renderNetwork('add', n);
        expect(add.length).toBeGreaterThan(0);
        for (const l of add) expect(l.startsWith('add element ')).toBe(true);
        expect(renderNetwork('delete', n)).toEqual(add.map((l) => l.replace(/^add /, 'delete ')));
      }
    }
  });

  test('a port delete carries only the map key, no value', () => {
    for (const s of SCENARIOS) {
      const add = renderPorts('add', s.ports);
      const del = renderPorts('delete', s.ports);
      expect(del).toHaveLength(add.length);
      for (const l of del) {
        expect(l.startsWith('delete element ')).toBe(true);
        // A key may hold IPv6 addresses (colons), but never the ` : ` that separates a map value.
        expect(l).not.toContain(' : ');
      }
      for (const l of add) expect(l.split(' : ')).toHaveLength(2);
      expect(del).toEqual(add.map((l) => l.replace(/^add /, 'delete ').replace(/ : [^}]*(?= \}$)/, '')));
    }
  });

  test('an empty change renders no line (no empty element blocks)', () => {
    expect(renderPorts('add', [])).toEqual([]);
    expect(renderPorts('delete', [])).toEqual([]);
    for (const s of SCENARIOS) {
      for (const l of [...full(s).split('\n'), ...renderSteps(s).split('\n')]) expect(l).not.toMatch(/\{\s*\}/);
    }
  });

  test('rendering is deterministic', () => {
    for (const s of SCENARIOS) {
      const copy: Scenario = structuredClone(s);
      expect(renderFull(MARK, copy.networks, copy.ports)).toBe(renderFull(MARK, s.networks, s.ports));
      expect(renderSteps(copy)).toBe(renderSteps(s));
    }
    expect(renderBase(MARK)).toBe(renderBase(MARK));
  });

  test('rendering does not mutate its input', () => {
    for (const s of SCENARIOS) {
      const before = JSON.stringify(s);
      renderFull(MARK, s.networks, s.ports);
      renderSteps(s);
      expect(JSON.stringify(s)).toBe(before);
    }
  });

  test('a port publish is O(1): its transaction does not grow with existing ports or networks (moby#53466)', () => {
    const p = port({ hostPort: 7777, containerIp: '172.30.9.9' });
    // The firewall publishes a port by sending renderPorts('add', [p]) whatever the state; the state only lives in
    // the sets, so the only thing to compare is what the state's size could change: the base and a port's lines.
    const small = { networks: [] as FwNetwork[], ports: [] as FwPort[] };
    const large = { networks: manyNetworks(500), ports: manyPorts(500) };
    const addOne = renderPorts('add', [p]);
    expect(addOne).toHaveLength(1);
    const fullSmall = renderFull(MARK, small.networks, small.ports).split('\n');
    const fullLarge = renderFull(MARK, large.networks, large.ports).split('\n');
    const fullSmallPlus = renderFull(MARK, small.networks, [...small.ports, p]).split('\n');
    const fullLargePlus = renderFull(MARK, large.networks, [...large.ports, p]).split('\n');
    // Publishing one more port adds exactly its one element line, with 0 or 500 ports and networks around.
    expect(fullSmallPlus.length - fullSmall.length).toBe(addOne.length);
    expect(fullLargePlus.length - fullLarge.length).toBe(addOne.length);
    expect(fullSmallPlus.filter((l) => !fullSmall.includes(l))).toEqual(addOne);
    expect(fullLargePlus.filter((l) => !fullLarge.includes(l))).toEqual(addOne);
    // Chains (rules) never depend on ports or networks: nothing is rewritten per port.
    expect(rulesByChain(fullLarge.join('\n'))).toEqual(rulesByChain(fullSmall.join('\n')));
    expect(fullLarge.filter((l) => / rule /.test(l)).length).toBe(fullSmall.filter((l) => / rule /.test(l)).length);
    // One element line per port, one per non-empty set per network.
    expect(renderPorts('add', large.ports)).toHaveLength(500);
    expect(renderPorts('delete', [p])).toHaveLength(1);
  });
});

/** Why the nft check cannot run here, or undefined when it can. */
function nftSkipReason(): string | undefined {
  if (process.platform !== 'linux') return `platform is ${process.platform}, not linux`;
  const uid = process.getuid?.();
  if (uid !== 0) return `not running as root (uid ${uid ?? 'unknown'}); nft -c needs CAP_NET_ADMIN to check against the kernel`;
  const v = spawnSync('nft', ['--version'], { encoding: 'utf8' });
  if (v.error) return `nft is not on PATH (${v.error.message})`;
  if (v.status !== 0) return `nft --version failed: ${v.stderr.trim()}`;
  return undefined;
}

const NFT_SKIP = nftSkipReason();
if (NFT_SKIP !== undefined) console.log(`skipping nft -c validation of the firewall golden scripts: ${NFT_SKIP}`);
const describeNft = NFT_SKIP === undefined ? describe : describe.skip;

describeNft('firewall scripts pass nft -c (parsed and checked by the kernel, never committed)', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'tsnet-nft-golden-'));
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function nftCheck(name: string, script: string): { status: number | null; stderr: string } {
    const file = path.join(dir, `${name}.nft`);
    writeFileSync(file, withNewline(script));
    // -c: check only. The batch is sent to the kernel for validation and aborted; the host's ruleset never changes.
    const r = spawnSync('nft', ['-c', '-f', file], { encoding: 'utf8' });
    if (r.error) throw r.error;
    return { status: r.status, stderr: r.stderr };
  }

  test('the check is not vacuous: nft -c rejects a map element without its value', () => {
    const r = nftCheck('negative', `${base()}\nadd element ${TABLE} dnat4any { tcp . 80 }`);
    expect(r.status).not.toBe(0);
    expect(r.stderr).not.toBe('');
  });

  test('the step check is not vacuous: nft -c rejects deleting a map key that was never added', () => {
    const p = port();
    const script = [base(), ...renderNetwork('add', net()), ...renderPorts('add', [p]), ...renderPorts('delete', [{ ...p, hostPort: p.hostPort + 1 }])].join('\n');
    const r = nftCheck('negative-delete', script);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/No such file or directory/);
  });

  for (const s of SCENARIOS) {
    test(`${s.name}: full ruleset`, () => {
      expect(nftCheck(`${s.name}.full`, full(s))).toEqual({ status: 0, stderr: '' });
    });
    test(`${s.name}: base + every incremental step in one batch`, () => {
      // Adds, then deletes of what was just added: the deletes only pass when their keys match the elements.
      expect(nftCheck(`${s.name}.steps`, `${base()}\n${renderSteps(s)}`)).toEqual({ status: 0, stderr: '' });
    });
  }

  test('all scenarios together in one full ruleset (distinct bridges)', () => {
    const networks = [...manyNetworks(50), net()];
    const ipv6 = SCENARIOS.find((s) => s.name === 'ports-ipv6');
    if (!ipv6) throw new Error('no ports-ipv6 scenario');
    const ports = [...manyPorts(200), ...ipv6.ports];
    expect(nftCheck('large.full', renderFull(MARK, networks, ports))).toEqual({ status: 0, stderr: '' });
  });

  function base(): string {
    return renderBase(MARK);
  }
});
