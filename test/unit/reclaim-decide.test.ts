import type { NetworkDetail } from '../../src/docker/contract';
import { type Candidate, decide, type DockerView, type Holdings, inRemovalOrder, isDriverName } from '../../src/reclaim/decide';

const NAME = 'tsnet';
const N1 = '1'.repeat(64);
const N2 = '2'.repeat(64);
const E1 = 'e'.repeat(64);
const E2 = 'f'.repeat(64);
const P1 = 'tsnet-local/10.1.0.0/16/10.1.5.0/24';
const P2 = 'tsnet-local/10.2.0.0/24';

/** tsnet: two networks on its own pools, one endpoint each, a macvlan-style shim address on N2. */
function holdings(): Holdings {
  return {
    networks: [
      { id: N1, createdAt: 't1', pending: false, addresses: ['10.1.5.254', '10.1.5.1'], reserved: [], subnets: ['10.1.0.0/16'] },
      { id: N2, createdAt: 't2', pending: false, addresses: ['10.2.0.1'], reserved: [{ poolId: P2, address: '10.2.0.3' }], subnets: ['10.2.0.0/24'] },
    ],
    endpoints: [
      { id: E1, networkId: N1, createdAt: 't3', pending: false },
      { id: E2, networkId: N2, createdAt: 't4', pending: false },
    ],
    pools: [
      { poolId: P1, pool: '10.1.0.0/16', subPool: '10.1.5.0/24', token: 1 },
      { poolId: P2, pool: '10.2.0.0/24', token: 2 },
    ],
    addresses: [
      { poolId: P1, address: '10.1.5.254', kind: 'gateway', token: 3 },
      { poolId: P1, address: '10.1.5.1', kind: 'address', token: 4 },
      { poolId: P1, address: '10.1.5.10', kind: 'address', token: 5 },
      { poolId: P2, address: '10.2.0.1', kind: 'gateway', token: 6 },
      { poolId: P2, address: '10.2.0.3', kind: 'address', token: 7 },
      { poolId: P2, address: '10.2.0.2', kind: 'address', token: 8 },
    ],
  };
}

/** Docker with all of it (no gateway shown for N1: `--gateway` was not given). */
function view(): DockerView {
  const n1: NetworkDetail = {
    id: N1,
    name: 'n1',
    driver: NAME,
    internal: false,
    ipamDriver: NAME,
    ipamConfig: [{ subnet: '10.1.0.0/16', ipRange: '10.1.5.0/24', auxAddresses: { r: '10.1.5.1' } }],
    endpoints: [{ endpointId: E1, ipv4: '10.1.5.10/16' }],
  };
  const n2: NetworkDetail = {
    id: N2,
    name: 'n2',
    driver: NAME,
    internal: false,
    ipamDriver: NAME,
    ipamConfig: [{ subnet: '10.2.0.0/24', gateway: '10.2.0.1', auxAddresses: {} }],
    endpoints: [{ endpointId: E2, ipv4: '10.2.0.2/24' }],
  };
  return { daemon: { id: 'D1', networkDrivers: ['bridge', NAME] }, networks: [n1, n2] };
}

const ids = (cs: Candidate[]) => cs.map((c) => (c.kind === 'endpoint' ? `endpoint ${c.endpointId[0]}` : c.kind === 'network' ? `network ${c.networkId[0]}` : c.kind === 'pool' ? `pool ${c.poolId}` : `address ${c.address}`)).sort();

type Row = [string, (h: Holdings, v: DockerView) => void, string[] | 'in-doubt', string?];

const rows: Row[] = [
  ['Docker has everything', () => undefined, []],
  ['an endpoint gone (container removed)', (_h, v) => (v.networks[0].endpoints = []), ['address 10.1.5.10', 'endpoint e']],
  ['an ep- endpoint (no sandbox) still there is kept', (_h, v) => (v.networks[0].endpoints = [{ endpointId: E1 }]), ['address 10.1.5.10']],
  // Its pool (and the addresses in it) wait for the network: they are candidates once it is gone (the next look).
  ['a network gone: it first; its endpoints go with it, its pool and addresses in the next look', (_h, v) => v.networks.splice(0, 1), ['network 1']],
  ['...and once it is gone, its pool', (h, v) => {
    v.networks.splice(0, 1);
    h.networks.splice(0, 1);
    h.endpoints.splice(0, 1);
  }, [`pool ${P1}`]],
  ['a pending network and endpoint are in flight: never candidates', (h, v) => {
    v.networks.splice(1, 1);
    v.networks[0].endpoints = [];
    h.networks[1].pending = true;
    h.endpoints[0].pending = true;
  }, ['address 10.1.5.10']],
  ['an address leaked by a RequestAddress nobody used', (h) => h.addresses.push({ poolId: P1, address: '10.1.5.77', kind: 'address', token: 9 }), ['address 10.1.5.77']],
  ['a gateway Docker does not show is kept; a reserved shim address too', (h, v) => {
    v.networks[1].ipamConfig[0].gateway = undefined;
    h.networks[1].addresses = [];
  }, []],
  ['a pool no tsnet-IPAM network configures (leaked RequestPool)', (h) => h.pools.push({ poolId: 'tsnet-local/10.9.0.0/24', pool: '10.9.0.0/24', token: 10 }), ['pool tsnet-local/10.9.0.0/24']],
  ['the same subnet under another IPAM does not hold tsnet pool', (h, v) => {
    h.pools.push({ poolId: 'tsnet-local/10.9.0.0/24', pool: '10.9.0.0/24', token: 10 });
    v.networks.push({ id: '3'.repeat(64), name: 'x', driver: 'bridge', internal: false, ipamDriver: 'default', ipamConfig: [{ subnet: '10.9.0.0/24', auxAddresses: {} }], endpoints: [] });
  }, ['pool tsnet-local/10.9.0.0/24']],
  ['IPv6 spelled differently by Docker still matches', (h, v) => {
    h.pools.push({ poolId: 'tsnet-local/fd00:1::/64', pool: 'fd00:1::/64', token: 11 });
    h.addresses.push({ poolId: 'tsnet-local/fd00:1::/64', address: 'fd00:1::a', kind: 'address', token: 12 });
    v.networks[0].ipamConfig.push({ subnet: 'fd00:1:0:0::/64', auxAddresses: {} });
    v.networks[0].endpoints[0].ipv6 = 'fd00:1:0::A/64';
  }, []],
  ['Docker knows none of tsnet networks: in doubt (another dockerd?)', (_h, v) => (v.networks = []), 'in-doubt'],
  ['...unless it is the daemon seen knowing them before', (_h, v) => (v.networks = []), ['network 1', 'network 2'], 'D1'],
  ['...and a different daemon ID is still in doubt', (_h, v) => (v.networks = []), 'in-doubt', 'D0'],
  ['tsnet has only IPAM state, Docker uses tsnet IPAM: decided', (h, v) => {
    h.networks = [];
    h.endpoints = [];
    v.networks = [{ ...v.networks[0], id: '4'.repeat(64), driver: 'bridge', endpoints: [] }];
    v.daemon.networkDrivers = ['bridge'];
  }, ['address 10.1.5.10', `pool ${P2}`]],
  ['tsnet has only IPAM state, Docker shows no sign of tsnet: in doubt', (h, v) => {
    h.networks = [];
    h.endpoints = [];
    v.networks = [];
    v.daemon.networkDrivers = ['bridge'];
  }, 'in-doubt'],
];

// Every row with four values: a shorter one would make jest pass a done callback as the fourth.
test.each(rows.map(([name, change, expected, trusted]): Required<Row> => [name, change, expected, trusted ?? '']))('%s', (_name, change, expected, trusted) => {
  const h = holdings();
  const v = view();
  change(h, v);
  const d = decide(h, v, { driverName: NAME, ...(trusted === '' ? {} : { trustedDaemonId: trusted }) });
  if (expected === 'in-doubt') {
    expect(d.kind).toBe('in-doubt');
    return;
  }
  expect(d.kind).toBe('decided');
  if (d.kind === 'decided') expect(ids(d.candidates)).toEqual([...expected].sort());
});

test('evidence is reported: the network kind is what lets a later read trust the daemon', () => {
  expect(decide(holdings(), view(), { driverName: NAME })).toEqual({ kind: 'decided', candidates: [], evidence: 'network' });
});

test('removal order: endpoints, networks, addresses, pools', () => {
  const v = view();
  v.networks = [];
  const d = decide(holdings(), v, { driverName: NAME, trustedDaemonId: 'D1' });
  if (d.kind !== 'decided') throw new Error('in doubt');
  const h = holdings();
  h.addresses.push({ poolId: P1, address: '10.1.5.77', kind: 'address', token: 9 });
  const pools: Candidate[] = [P1, P2].map((poolId, i) => ({ kind: 'pool', poolId, token: i + 1, why: '' }));
  const mixed: Candidate[] = [...pools, ...d.candidates, { kind: 'address', poolId: P1, address: '10.1.5.77', token: 9, why: '' }, { kind: 'endpoint', networkId: N1, endpointId: E1, createdAt: 't3', why: '' }];
  expect(inRemovalOrder(mixed).map((c) => c.kind)).toEqual(['endpoint', 'network', 'network', 'address', 'pool', 'pool']);
});

test('first use: a tsnet holding nothing trusts the daemon it reads first; holding anything, it does not', () => {
  const empty: Holdings = { networks: [], endpoints: [], pools: [], addresses: [] };
  const v = view();
  v.networks = [];
  v.daemon.networkDrivers = ['bridge'];
  expect(decide(empty, v, { driverName: NAME })).toEqual({ kind: 'decided', candidates: [], evidence: 'first-use' });
  // Trusted before: only that daemon counts.
  expect(decide(empty, v, { driverName: NAME, trustedDaemonId: 'D0' })).toEqual({ kind: 'decided', candidates: [] });
  const h = holdings();
  h.networks = [];
  h.endpoints = [];
  expect(decide(h, v, { driverName: NAME }).kind).toBe('in-doubt');
});

describe('a managed plugin is known by its reference (config.driverName), not by its socket file name', () => {
  const REF = '127.0.0.1:5000/tsnet:latest';
  /** Docker's view of the same networks with the plugin's reference as driver and IPAM, as the user typed it. */
  function refView(shown: string): DockerView {
    const v = view();
    for (const n of v.networks) {
      n.driver = shown;
      n.ipamDriver = shown;
    }
    v.daemon.networkDrivers = ['bridge', shown];
    return v;
  }

  test.each([REF, '127.0.0.1:5000/tsnet'])('Docker showing %s: every pool and address is held', (shown) => {
    expect(decide(holdings(), refView(shown), { driverName: REF })).toEqual({ kind: 'decided', candidates: [], evidence: 'network' });
  });

  test("with the socket's name instead, tsnet's IPAM networks look gone: live containers' addresses would be reclaimed", () => {
    const d = decide(holdings(), refView(REF), { driverName: 'tsnet' });
    expect(d.kind === 'decided' && ids(d.candidates)).toEqual(['address 10.1.5.10', 'address 10.2.0.2']);
  });

  test.each([
    ['tsnet', 'tsnet:latest', true],
    ['tsnet:latest', 'tsnet', true],
    ['localhost:5000/tsnet', 'localhost:5000/tsnet:latest', true],
    ['localhost:5000/tsnet:v2', 'localhost:5000/tsnet:latest', false],
    ['localhost:5000/tsnet', 'tsnet', false],
    ['tsnet2', 'tsnet', false],
  ])('isDriverName(%j, %j) is %j', (shown, name, same) => {
    expect(isDriverName(shown, name)).toBe(same);
  });
});
