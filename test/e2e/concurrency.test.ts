import { cleanAfterEach, ownLinks, runDetached, storeRows } from '../harness/containers';
import { eventually, patient } from '../harness/exec';
import { describeE2E } from '../harness/host';
import { type E2EEnv, setupE2E } from '../harness/tsnet';

/**
 * dockerd calling tsnet from many clients at once (issue 10, item 6), through the docker CLI: concurrent `docker run`
 * on one network, concurrent network create/rm drawing from the default pools, concurrent connect/disconnect of one
 * container. What the driver and IPAM do under every interleaving is test/unit/model.test.ts's; this is the real
 * stack's word on it.
 */
jest.setTimeout(patient(240_000));

const RUNS = 100;
/** tsnet's default pools for this suite: sixteen /24s, none on the host's routes. */
const DEFAULT_POOL = 'base=10.153.0.0/20,size=24';

const all = <T>(n: number, f: (i: number) => Promise<T>) => Promise.all(Array.from({ length: n }, (_, i) => f(i)));

interface Ipv4Range {
  lo: number;
  hi: number;
}

function rangeOf(cidr: string): Ipv4Range {
  const [addr, len] = cidr.split('/');
  const n = addr.split('.').reduce((acc, b) => acc * 256 + Number(b), 0);
  const size = 2 ** (32 - Number(len));
  return { lo: n - (n % size), hi: n - (n % size) + size - 1 };
}

/** The IPv4 subnets of every tsnet network, as dockerd reports them. */
async function tsnetSubnets(env: E2EEnv, prefix: RegExp): Promise<Map<string, string[]>> {
  const names = (await env.docker.docker(['network', 'ls', '--filter', `driver=${env.name}`, '--format', '{{.Name}}'])).split('\n').filter((n) => prefix.test(n));
  const out = new Map<string, string[]>();
  if (names.length === 0) return out;
  const inspected = JSON.parse(await env.docker.docker(['network', 'inspect', ...names])) as Array<{ Name: string; IPAM: { Config: Array<{ Subnet: string }> | null } }>;
  for (const n of inspected) out.set(n.Name, (n.IPAM.Config ?? []).map((c) => c.Subnet));
  return out;
}

/** Pairs of networks whose subnets overlap. */
function overlapsOf(subnets: Map<string, string[]>): string[] {
  const flat = [...subnets].flatMap(([name, cidrs]) => cidrs.map((c) => ({ name, c, r: rangeOf(c) })));
  const out: string[] = [];
  for (let i = 0; i < flat.length; i++) {
    for (let j = i + 1; j < flat.length; j++) {
      if (flat[i].r.lo <= flat[j].r.hi && flat[j].r.lo <= flat[i].r.hi) out.push(`${flat[i].name} ${flat[i].c} / ${flat[j].name} ${flat[j].c}`);
    }
  }
  return out;
}

/** The container's interfaces other than lo, with their IPv4 addresses (`eth1 10.153.2.2`), from inside it. */
async function interfacesIn(env: E2EEnv, container: string): Promise<string[]> {
  const out = await env.docker.docker(['exec', container, 'ip', '-o', '-4', 'addr', 'show']);
  return out
    .split('\n')
    .map((l) => /^\d+:\s+(\S+)\s+inet\s+([\d.]+)\//.exec(l))
    .flatMap((m) => (m && m[1] !== 'lo' ? [`${m[1]} ${m[2]}`] : []))
    .sort();
}

/** The container's networks as dockerd sees them: interface address per network name. */
async function networksOf(env: E2EEnv, container: string): Promise<Map<string, string>> {
  const nets = JSON.parse(await env.docker.docker(['inspect', '-f', '{{json .NetworkSettings.Networks}}', container])) as Record<string, { IPAddress: string }>;
  return new Map(Object.entries(nets).map(([name, n]) => [name, n.IPAddress]));
}

/** After everything is removed: no link of this tsnet, and no record but the forwarding one. */
async function expectNothingLeft(env: E2EEnv): Promise<void> {
  await eventually(async () => expect(await ownLinks(env)).toEqual([]), patient(10_000));
  // A tombstone goes in the reaper's commit just after its link.
  await eventually(() => {
    const rows = storeRows(env);
    for (const c of ['network', 'endpoint', 'pool', 'address', 'tombstone', 'parent']) expect([c, rows[c] ?? 0]).toEqual([c, 0]);
  }, patient(10_000));
}

describeE2E('concurrency through dockerd', () => {
  const env = setupE2E({ tsnetArgs: ['--default-address-pool', DEFAULT_POOL] });
  cleanAfterEach(env);
  const net = (name: string, ...args: string[]) => env.docker.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, ...args, name]);

  test(`${RUNS} concurrent docker run on one network get ${RUNS} distinct addresses, all reachable; nothing is left after`, async () => {
    await net('crowd', '--subnet', '10.152.0.0/24');
    const started = performance.now();
    await all(RUNS, (i) => runDetached(env, `c${i}`, ['--network', 'crowd']));
    const runMs = performance.now() - started;
    const ips = await all(RUNS, (i) => env.docker.docker(['inspect', '-f', '{{.NetworkSettings.Networks.crowd.IPAddress}}', `c${i}`]));
    expect(new Set(ips).size).toBe(RUNS);
    for (const ip of ips) expect(rangeOf(`${ip}/32`).lo).toBeGreaterThan(rangeOf('10.152.0.0/24').lo);
    // tsnet holds exactly those (plus the gateway), one veth pair each.
    expect(storeRows(env)).toMatchObject({ endpoint: RUNS, address: RUNS + 1 });
    expect((await ownLinks(env)).filter((l) => !l.startsWith('tsbr-'))).toHaveLength(RUNS);
    // Every one answers a ping from the first (one exec: a loop in busybox sh).
    const script = `for ip in ${ips.slice(1).join(' ')}; do ping -c 1 -W 2 $ip >/dev/null 2>&1 || echo "unreachable $ip"; done; echo done`;
    expect(await env.docker.docker(['exec', 'c0', 'sh', '-c', script])).toBe('done');
    const rmStarted = performance.now();
    // One at a time: after 100 concurrent `rm -f` dockerd 20.10 at times kept counting an endpoint on the network
    // ("has active endpoints") while listing none and tsnet had deleted them all; the concurrency asked for is the runs'.
    for (let i = 0; i < RUNS; i++) await env.docker.docker(['rm', '-f', `c${i}`]);
    const rmMs = performance.now() - rmStarted;
    const rm = await env.docker.dockerTry(['network', 'rm', 'crowd']);
    // On failure: what dockerd still counts on the network, and what tsnet still has.
    if (rm.code !== 0) {
      const left = await env.docker.dockerTry(['network', 'inspect', '-f', '{{json .Containers}}', 'crowd']);
      throw new Error(`network rm crowd: ${rm.stderr.trim()}; dockerd still lists ${left.stdout.trim()}; tsnet rows ${JSON.stringify(storeRows(env))}`);
    }
    await expectNothingLeft(env);
    process.stdout.write(`concurrency: ${RUNS} concurrent docker run ${Math.round(runMs)} ms, ${RUNS} docker rm -f one at a time ${Math.round(rmMs)} ms\n`);
  });

  test('concurrent network create and rm drawing from the default pools never overlap', async () => {
    // Twelve at once, then six removed while six more are created, then all removed at once.
    await all(12, (i) => net(`p${i}`));
    let subnets = await tsnetSubnets(env, /^[pq]\d+$/);
    expect(subnets.size).toBe(12);
    expect(overlapsOf(subnets)).toEqual([]);
    for (const cidrs of subnets.values()) for (const c of cidrs) expect(c).toMatch(/^10\.153\.([0-9]|1[0-5])\.0\/24$/);
    await Promise.all([...Array.from({ length: 6 }, (_, i) => env.docker.docker(['network', 'rm', `p${i}`])), ...Array.from({ length: 6 }, (_, i) => net(`q${i}`))]);
    subnets = await tsnetSubnets(env, /^[pq]\d+$/);
    expect([...subnets.keys()].sort()).toEqual([...Array.from({ length: 6 }, (_, i) => `p${i + 6}`), ...Array.from({ length: 6 }, (_, i) => `q${i}`)].sort());
    expect(overlapsOf(subnets)).toEqual([]);
    // tsnet's pools are the networks' subnets, each once.
    expect(storeRows(env)).toMatchObject({ network: 12, pool: 12 });
    // Each network works: a container on each gets an address of its subnet.
    await all(12, async (i) => {
      const name = i < 6 ? `p${i + 6}` : `q${i - 6}`;
      await runDetached(env, `m${i}`, ['--network', name]);
      const ip = await env.docker.docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${name}").IPAddress}}`, `m${i}`]);
      const r = rangeOf(subnets.get(name)![0]);
      expect(rangeOf(`${ip}/32`).lo).toBeGreaterThan(r.lo);
      expect(rangeOf(`${ip}/32`).lo).toBeLessThan(r.hi);
    });
    await env.docker.removeAllContainers();
    await all(12, (i) => env.docker.docker(['network', 'rm', i < 6 ? `p${i + 6}` : `q${i - 6}`]));
    expect((await tsnetSubnets(env, /^[pq]\d+$/)).size).toBe(0);
    await expectNothingLeft(env);
  });

  test('concurrent connect and disconnect of one container to many networks: its interfaces are what dockerd says, nothing leaks', async () => {
    const N = 10;
    await net('home', '--subnet', '10.152.1.0/24');
    await all(N, (i) => net(`x${i}`));
    await runDetached(env, 'hub', ['--network', 'home']);
    const check = async () => {
      const nets = await networksOf(env, 'hub');
      const inside = await interfacesIn(env, 'hub');
      // One interface per network dockerd lists, with the address dockerd reports for it.
      expect(inside.map((l) => l.split(' ')[1]).sort()).toEqual([...nets.values()].sort());
      expect(new Set(inside.map((l) => l.split(' ')[0])).size).toBe(nets.size);
      // One host veth per endpoint, plus the bridges.
      expect((await ownLinks(env)).filter((l) => !l.startsWith('tsbr-'))).toHaveLength(nets.size);
      expect(storeRows(env)).toMatchObject({ endpoint: nets.size });
      return nets;
    };
    await all(N, (i) => env.docker.docker(['network', 'connect', `x${i}`, 'hub']));
    expect([...(await check()).keys()].sort()).toEqual(['home', ...Array.from({ length: N }, (_, i) => `x${i}`)].sort());
    // Half go while the other half are connected again after going: disconnects and connects in flight together.
    await all(N / 2, (i) => env.docker.docker(['network', 'disconnect', `x${i}`, 'hub']));
    await Promise.all([
      ...Array.from({ length: N / 2 }, (_, i) => env.docker.docker(['network', 'connect', `x${i}`, 'hub'])),
      ...Array.from({ length: N / 2 }, (_, i) => env.docker.docker(['network', 'disconnect', `x${i + N / 2}`, 'hub'])),
    ]);
    expect([...(await check()).keys()].sort()).toEqual(['home', ...Array.from({ length: N / 2 }, (_, i) => `x${i}`)].sort());
    await all(N / 2, (i) => env.docker.docker(['network', 'disconnect', `x${i}`, 'hub']));
    expect([...(await check()).keys()]).toEqual(['home']);
    expect(await env.docker.docker(['exec', 'hub', 'ping', '-c', '1', '-W', '2', '10.152.1.1'])).toContain('1 packets received');
    await env.docker.removeAllContainers();
    await all(N, (i) => env.docker.docker(['network', 'rm', `x${i}`]));
    await env.docker.docker(['network', 'rm', 'home']);
    await expectNothingLeft(env);
  });
});
