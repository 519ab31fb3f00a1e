import fc from 'fast-check';
import { BASE, CHILD } from './app';

/**
 * Request bodies for every remote API method, as JSON text: valid ones (so state exists and changes), valid ones
 * with one field mutated (wrong types, huge and deep values, unicode, control characters, address/CIDR edge cases,
 * shell/nft/ip metacharacters) or removed, and random JSON or non-JSON.
 */

/** Strings that have broken (or would break) address parsing, command lines and logs. */
const EDGE_STRINGS = [
  '', ' ', '0', '-1', 'null', 'true', '{}', '[]',
  '172.28.0.0/33', '172.28.0.0/-1', '172.28.0.0/', '172.28.0.0/16/16', '172.29.5.0/24', '172.29.0.0/16', '10.0.0.0/8', '0.0.0.0/0', '::/0',
  '172.29.5.300', '172.29.5.2', '172.29.5.2/16', '172.29.5.2/33', '172.29.5.254/16', '255.255.255.255', '0.0.0.0', '127.0.0.1', '224.0.0.1',
  '::ffff:1.2.3.4', '::ffff:172.29.5.2', '::1', 'fe80::1%eth0', 'fd77::/64', 'fd77::1/129', '1.2.3.4 dev lo', '1.2.3.4/24 dev eth0',
  '01.02.03.04', '1.2.3', '0x7f.1', '1e3.0.0.1', '172.29.5.2\n', ' 172.29.5.2', '172.29.05.002',
  '02:42:ac:1d:05:02', 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00', '02:42:ac:1d:05', 'zz:zz:zz:zz:zz:zz',
  'lo', 'eth0', 'tsbr-x', 'a'.repeat(16), 'br0 type dummy', '../../etc/passwd', '/proc/sys/net/ipv4/ip_forward',
  '; rm -rf /', '$(reboot)', '`id`', '| nft flush ruleset', '&& ip link del lo', 'x\ny', '#', '"', "'", '\\', '\\"', '%s%n', '${IFS}',
  '\u0000', '\u0007\u001b[2J', '\u202e', '\ud800', 'ü', '😀', '\uFEFF', 'a'.repeat(10_000),
  'tsnet-local', 'tsnet-global', 'com.docker.network.gateway', 'bridge',
];

const metaChars = fc.constantFrom(...';|&$()\n#"\'\\`<>{}[]*? \t\u0000'.split(''));
const nastyString = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...EDGE_STRINGS) },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ unit: fc.oneof(metaChars, fc.constantFrom('a', '1', '.', '/', ':')), maxLength: 30 }) },
  { weight: 1, arbitrary: fc.nat({ max: 100_000 }).map((n) => 'x'.repeat(n)) },
);

/** A deep value is written as a marker string and expanded in the JSON text (JSON.stringify of it would recurse). */
const DEEP = '\u0001deep:';
const deepMarker = fc.integer({ min: 10, max: 6_000 }).map((n) => `${DEEP}${n}`);

const nastyValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 6, arbitrary: nastyString },
  { weight: 2, arbitrary: fc.oneof(fc.integer(), fc.double(), fc.constantFrom(0, -1, 65535, 65536, 2 ** 53, 6, 17, 132), fc.boolean(), fc.constant(null)) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.dictionary(nastyString, nastyString, { maxKeys: 5 }) },
  { weight: 1, arbitrary: fc.array(nastyString, { maxLength: 5 }) },
  { weight: 1, arbitrary: deepMarker },
  { weight: 1, arbitrary: fc.nat({ max: 5_000 }).map((n) => Array.from({ length: n }, (_, i) => i)) },
);

/**
 * Driver options of a macvlan or ipvlan network: parents tsnet has (the NIC, the seeded VLAN), makes (another VLAN,
 * a dummy), cannot use (missing, a bad VLAN id, a tsnet link), and each mode's own options (the mutations add
 * the other mode's).
 */
const parent = fc.constantFrom('eth1', CHILD.parent, 'eth1.20', 'eth1.4094', 'eth1.4095', 'eth9', 'eth9.5', '', 'tsbr-ffffffffff', `tshs-${'9'.repeat(10)}`);
const childOptions: fc.Arbitrary<Record<string, string>> = fc.oneof(
  fc.record(
    {
      mode: fc.constant('macvlan'),
      parent,
      macvlan_mode: fc.constantFrom('bridge', 'private', 'vepa', 'passthru', 'l2'),
      'tsnet.host_shim': fc.constantFrom('true', 'false'),
    },
    { requiredKeys: ['mode'] },
  ),
  fc.record(
    {
      mode: fc.constant('ipvlan'),
      parent,
      ipvlan_mode: fc.constantFrom('l2', 'l3', 'l3s', 'bridge'),
      ipvlan_flag: fc.constantFrom('bridge', 'private', 'vepa', 'l3'),
    },
    { requiredKeys: ['mode'] },
  ),
);

const id = fc.oneof(fc.constantFrom(BASE.networkId, BASE.endpointId), fc.stringMatching(/^[0-9a-f]{64}$/));

/** A valid-ish body per method; `pool` is the seeded pool's id. */
function templates(pool: string): Record<string, fc.Arbitrary<Record<string, unknown>>> {
  const ep = fc.oneof(
    fc.record({ NetworkID: fc.constant(BASE.networkId), EndpointID: fc.oneof(fc.constant(BASE.endpointId), id) }),
    fc.record({ NetworkID: fc.constant(CHILD.networkId), EndpointID: fc.oneof(fc.constantFrom(CHILD.endpointId, CHILD.spareEndpointId), id) }),
  );
  const portmap = fc.array(
    fc.record({
      Proto: fc.constantFrom(6, 17),
      IP: fc.constant(''),
      Port: fc.integer({ min: 1, max: 65535 }),
      HostIP: fc.constantFrom('127.0.0.1', ''),
      HostPort: fc.oneof(fc.constant(0), fc.integer({ min: 20_000, max: 30_000 })),
      HostPortEnd: fc.constant(0),
    }),
    { maxLength: 3 },
  );
  const subnet = fc.integer({ min: 0, max: 255 }).map((i) => ({ pool: `10.${i}.0.0/16`, gateway: `10.${i}.0.1` }));
  return {
    'Plugin.Activate': fc.constant({}),
    'NetworkDriver.GetCapabilities': fc.constant({}),
    'NetworkDriver.CreateNetwork': fc.oneof(
      fc.record({ id, subnet }).map(({ id: n, subnet: s }) => ({
        NetworkID: n,
        Options: { 'com.docker.network.generic': { 'com.docker.network.bridge.host_binding_ipv4': '127.0.0.1' }, 'com.docker.network.enable_ipv6': false },
        IPv4Data: [{ AddressSpace: 'tsnet-local', Pool: s.pool, Gateway: `${s.gateway}/16`, AuxAddresses: null }],
        IPv6Data: null,
      })),
      fc.record({ id, subnet, generic: childOptions, shimAux: fc.boolean(), internal: fc.boolean() }).map(({ id: n, subnet: s, generic, shimAux, internal }) => ({
        NetworkID: n,
        Options: { 'com.docker.network.generic': generic, 'com.docker.network.internal': internal },
        IPv4Data: [{ AddressSpace: 'tsnet-local', Pool: s.pool, Gateway: `${s.gateway}/16`, AuxAddresses: shimAux ? { host_shim: `${s.pool.split('.').slice(0, 2).join('.')}.0.250/16` } : null }],
        IPv6Data: null,
      })),
    ),
    'NetworkDriver.DeleteNetwork': fc.record({ NetworkID: id }),
    'NetworkDriver.CreateEndpoint': fc.oneof(
      fc.record({
        NetworkID: fc.constant(BASE.networkId),
        EndpointID: id,
        Interface: fc.record({ Address: fc.integer({ min: 3, max: 250 }).map((i) => `172.29.5.${i}/16`) }),
        Options: fc.constant({}),
      }),
      fc.record({
        NetworkID: fc.constant(CHILD.networkId),
        EndpointID: id,
        Interface: fc.record({
          Address: fc.integer({ min: 3, max: 248 }).map((i) => `172.30.0.${i}/24`),
          MacAddress: fc.option(fc.constantFrom('02:42:ac:1e:00:07', '02:aa:bb:cc:dd:ee'), { nil: undefined }),
        }, { requiredKeys: ['Address'] }),
        Options: fc.constant({}),
      }),
    ),
    'NetworkDriver.DeleteEndpoint': ep,
    'NetworkDriver.EndpointOperInfo': ep,
    'NetworkDriver.Join': ep.map((e) => ({ ...e, SandboxKey: BASE.sandboxKey, Options: {} })),
    'NetworkDriver.Leave': ep,
    'NetworkDriver.ProgramExternalConnectivity': fc.record({ e: ep, portmap }).map(({ e, portmap: p }) => ({ ...e, Options: { 'com.docker.network.portmap': p } })),
    'NetworkDriver.RevokeExternalConnectivity': ep,
    'NetworkDriver.DiscoverNew': fc.constant({ DiscoveryType: 1, DiscoveryData: { Address: '10.0.0.1' } }),
    'NetworkDriver.DiscoverDelete': fc.constant({ DiscoveryType: 1, DiscoveryData: { Address: '10.0.0.1' } }),
    'IpamDriver.GetCapabilities': fc.constant({}),
    'IpamDriver.GetDefaultAddressSpaces': fc.constant({}),
    'IpamDriver.RequestPool': fc.oneof(
      subnet.map((s) => ({ AddressSpace: 'tsnet-local', Pool: s.pool, SubPool: '', Options: {}, V6: false })),
      fc.constant({ AddressSpace: 'tsnet-local', Pool: '', SubPool: '', Options: {}, V6: false }),
    ),
    'IpamDriver.ReleasePool': fc.record({ PoolID: fc.constant(pool) }),
    'IpamDriver.RequestAddress': fc.record({ PoolID: fc.constant(pool), Address: fc.oneof(fc.constant(''), fc.integer({ min: 3, max: 250 }).map((i) => `172.29.5.${i}`)), Options: fc.constant({}) }),
    'IpamDriver.ReleaseAddress': fc.record({ PoolID: fc.constant(pool), Address: fc.integer({ min: 3, max: 250 }).map((i) => `172.29.5.${i}`) }),
  };
}

export const METHODS = Object.keys(templates(''));

/** Every (nested) field path of a value, objects and arrays alike, for mutation. */
function paths(v: unknown, prefix: Array<string | number> = []): Array<Array<string | number>> {
  if (v === null || typeof v !== 'object') return [];
  const out: Array<Array<string | number>> = [];
  for (const [k, child] of Object.entries(v)) {
    const p = [...prefix, Array.isArray(v) ? Number(k) : k];
    out.push(p, ...paths(child, p));
  }
  return out;
}

type Mutation = { kind: 'set'; value: unknown } | { kind: 'delete' } | { kind: 'add'; key: string; value: unknown };

function mutate(body: Record<string, unknown>, pick: number, m: Mutation): unknown {
  const copy = structuredClone(body);
  const all = paths(copy);
  if (m.kind === 'add' || all.length === 0) {
    if (m.kind === 'add') copy[m.key] = m.value;
    return copy;
  }
  const p = all[pick % all.length];
  let parent = copy as Record<string | number, unknown>;
  for (const k of p.slice(0, -1)) parent = parent[k] as Record<string | number, unknown>;
  const last = p[p.length - 1];
  if (m.kind === 'delete') Reflect.deleteProperty(parent, last);
  else parent[last] = m.value;
  return copy;
}

/** JSON text of a value, with deep markers expanded into arrays nested that deep. */
function toText(v: unknown): string {
  return JSON.stringify(v).replace(/"\\u0001deep:(\d+)"/g, (_m, n: string) => '['.repeat(Number(n)) + ']'.repeat(Number(n)));
}

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 6, arbitrary: nastyValue.map((value) => ({ kind: 'set' as const, value })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'delete' as const }) },
  { weight: 1, arbitrary: fc.tuple(nastyString, nastyValue).map(([key, value]) => ({ kind: 'add' as const, key, value })) },
);

/** One body for `method`: 15% valid, 70% one or two mutations of a valid one, 15% random JSON or garbage text. */
export function bodies(method: string, pool: string): fc.Arbitrary<string> {
  const t = templates(pool)[method];
  const mutated = fc
    .tuple(t, fc.array(fc.tuple(fc.nat(), mutation), { minLength: 1, maxLength: 2 }))
    .map(([body, ms]) => toText(ms.reduce<unknown>((b, [pick, m]) => mutate(b as Record<string, unknown>, pick, m), body)));
  const random = fc.oneof(
    fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
    nastyString,
    deepMarker.map((m) => toText({ Options: m })),
  );
  return fc.oneof({ weight: 15, arbitrary: t.map(toText) }, { weight: 70, arbitrary: mutated }, { weight: 15, arbitrary: random });
}
