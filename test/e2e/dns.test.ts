import { randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { fuzzPackets } from '../fuzz/dns-packets';
import { containerIp, runDetached } from '../harness/containers';
import {
  decodeReply,
  encodeQuery,
  nslookupIn,
  outcome,
  RCODE,
  resolverAt,
  tcpExchange,
  tcpQuery,
  udpBlast,
  udpExchange,
  udpQuery,
} from '../harness/dnsquery';
import { run, runOk, sleep } from '../harness/exec';
import { describeE2E } from '../harness/host';
import { startUpstream, type TestUpstream } from '../harness/resolver';
import { setupE2E, startTsnet, type TsnetProcess, uniquePluginName } from '../harness/tsnet';

/**
 * tsnet's DNS (issue 9, item 7) with a real dockerd: containers, the host and a LAN machine resolve containers by
 * name through tsnet's listeners; names follow Docker's events within a second; other names go to a test upstream
 * (dnsmasq in a namespace, logging what it gets) and never from an internal network; TCP for large answers;
 * listeners follow networks; dockerd restarted or killed; a fuzz burst. Every name, network and address is this
 * run's own; every container gets `--dns` of its own gateway, so nothing ever asks the host's resolvers.
 */
jest.setTimeout(120_000);

const TAG = randomBytes(2).toString('hex');
const ZONE = 'tsnet';
/** The upstream's domain: it answers `www.` there and NXDOMAIN for other names in it, and logs every query. */
const EXT = `ext${TAG}.test`;
const EXT_WWW = `www.${EXT}`;
const EXT_WWW_IP = '198.51.100.80';
/** One /24 per run for the upstream's veth (its .1 on the host is tsnet's `--dns-listen` host address). */
const UPSTREAM_NET = `10.53.${1 + (parseInt(TAG, 16) % 250)}`;

/** The suite's networks: name, subnet, gateway. */
const NET_A = { name: `dnsa${TAG}`, subnet: '172.31.231.0/24', gw: '172.31.231.1' };
const NET_B = { name: `dnsb${TAG}`, subnet: '172.31.232.0/24', gw: '172.31.232.1', subnet6: `fd53:${TAG}::/64`, gw6: `fd53:${TAG}::1` };
const NET_I = { name: `dnsi${TAG}`, subnet: '172.31.233.0/24', gw: '172.31.233.1' };
const NET_N = { name: `dnsn${TAG}`, subnet: '172.31.236.0/24', gw: '172.31.236.1' };
const NET_BIG = { name: `dnsbig${TAG}`, subnet: '172.31.237.0/24', gw: '172.31.237.1' };
/** The second tsnet's networks (no `--dns-internal`). */
const NET_P2 = { name: `dnsp${TAG}`, subnet: '172.31.234.0/24', gw: '172.31.234.1' };
const NET_I2 = { name: `dnsj${TAG}`, subnet: '172.31.235.0/24', gw: '172.31.235.1' };
/** Internal too, but its gateway named as a `--dns-listen` host address of the second tsnet. */
const NET_I3 = { name: `dnsk${TAG}`, subnet: '172.31.238.0/24', gw: '172.31.238.1' };

const fqdn = (name: string, network: { name: string }): string => `${name}.${network.name}.${ZONE}`;

/** Observed delays (ms) from a Docker command's return until tsnet's answer showed it; printed after the suite. */
const delays: Record<string, number> = {};

/** Polls `check` every 50 ms for at most `limitMs` and returns how long it took to hold; fails naming `what` otherwise. */
async function pollDelay(what: string, check: () => Promise<boolean>, limitMs = 5_000): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await check()) return Date.now() - start;
    if (Date.now() - start > limitMs) throw new Error(`${what}: not seen within ${limitMs} ms`);
    await sleep(50);
  }
}

/** {@link pollDelay}, recorded in {@link delays} under `what`. */
async function observedDelay(what: string, check: () => Promise<boolean>, limitMs = 5_000): Promise<number> {
  delays[what] = await pollDelay(what, check, limitMs);
  return delays[what];
}

const RUN_DELAY = 'docker run → name (max)';

/** The A answer for `name` at `server`, sorted, or the resolver's error code (`ENOTFOUND` for NXDOMAIN, ...). */
async function a(server: string, name: string): Promise<string[] | string> {
  const r = await outcome(resolverAt(server, 53, 1_000).resolve4(name));
  return typeof r === 'string' ? r : [...r].sort();
}

async function sameAs(server: string, name: string, want: string[] | string): Promise<boolean> {
  return JSON.stringify(await a(server, name)) === JSON.stringify(want);
}

describeE2E('the DNS test harness on its own: dnsmasq upstream and DNS clients', () => {
  let up: TestUpstream;
  beforeAll(async () => {
    up = await startUpstream({ subnet24: UPSTREAM_NET, domain: EXT, records: { [EXT_WWW]: EXT_WWW_IP } });
  });
  afterAll(async () => {
    await up.destroy();
  });

  test('the upstream answers its names, NXDOMAIN in its domain, logs each query; UDP, EDNS and pipelined TCP decode', async () => {
    const r = resolverAt(up.address);
    expect(await r.resolve4(EXT_WWW)).toEqual([EXT_WWW_IP]);
    expect(await outcome(r.resolve4(`nope.${EXT}`))).toBe('ENOTFOUND');
    const udp = await udpQuery(up.address, 53, EXT_WWW, 'A', { edns: 1232 });
    expect(udp).toMatchObject({ rcode: RCODE.NOERROR, tc: false, answers: [EXT_WWW_IP] });
    expect(udp.opt?.udpPayloadSize).toBeGreaterThanOrEqual(512);
    expect((await udpQuery(up.address, 53, EXT_WWW, 'A')).opt).toBeUndefined();
    const replies = await tcpExchange(up.address, 53, [encodeQuery(EXT_WWW, 'A', { id: 1 }), encodeQuery(`nope2.${EXT}`, 'A', { id: 2 })]);
    expect(replies.map(decodeReply).map((x) => [x.id, x.rcode, x.answers])).toEqual(
      expect.arrayContaining([
        [1, RCODE.NOERROR, [EXT_WWW_IP]],
        [2, RCODE.NXDOMAIN, []],
      ]),
    );
    await up.waitForQuery(`nope2.${EXT}`);
    expect(up.queries()).toContainEqual({ type: 'A', name: `nope.${EXT}`, from: up.hostAddress });
  });
});

describeE2E('tsnet DNS with a real dockerd', () => {
  let up: TestUpstream;
  // Before setupE2E's hooks: tsnet listens on the upstream veth's host address and forwards to the upstream.
  beforeAll(async () => {
    up = await startUpstream({ subnet24: UPSTREAM_NET, domain: EXT, records: { [EXT_WWW]: EXT_WWW_IP } });
  });
  /** A second tsnet on the same dockerd with the defaults: gateways only, never an internal network's. */
  let tsnet2: TsnetProcess | undefined;
  // jest runs afterAll hooks in the order they were declared: this one before setupE2E's teardown, so the second
  // tsnet's networks go while dockerd and it still run. Every step runs even if one fails.
  afterAll(async () => {
    const failures: unknown[] = [];
    const step = async (fn: () => Promise<unknown>): Promise<void> => {
      await fn().catch((e: unknown) => failures.push(e));
    };
    if (tsnet2) {
      const t = tsnet2;
      await step(() => env.docker.removeAllContainers());
      // Either may be missing if its test failed early.
      for (const n of [NET_P2, NET_I2, NET_I3]) await step(() => env.docker.dockerTry(['network', 'rm', n.name]));
      await step(() => t.stop());
    }
    await step(() => up.destroy());
    console.log(`observed delays (ms) from the Docker command's return to tsnet's answer: ${JSON.stringify(delays)}`);
    if (failures.length > 0) throw new AggregateError(failures, 'dns suite cleanup failed');
  }, 60_000);
  const env = setupE2E({
    tsnetArgs: (d) => [
      '--docker-socket',
      d.socket,
      '--dns-listen',
      'gateways',
      '--dns-listen',
      up.hostAddress,
      '--dns-upstream',
      up.address,
      '--dns-internal',
    ],
    hookTimeoutMs: 180_000,
  });

  const createNet = async (
    n: { name: string; subnet: string; gw: string; subnet6?: string; gw6?: string },
    driver: string,
    extra: string[] = [],
  ): Promise<void> => {
    const six = n.subnet6 && n.gw6 ? ['--ipv6', '--subnet', n.subnet6, '--gateway', n.gw6] : [];
    await env.docker.docker([
      'network',
      'create',
      '-d',
      driver,
      '--ipam-driver',
      driver,
      '--subnet',
      n.subnet,
      '--gateway',
      n.gw,
      ...six,
      ...extra,
      n.name,
    ]);
  };
  /**
   * A busybox container on `n` asking its gateway (`--dns`), stopped at once by `docker stop`. With `named` (the
   * default) it returns once the gateway answers the container's FQDN with its address, which must take ≤ 1 s.
   */
  const runOn = async (name: string, n: { name: string; gw: string }, extra: string[] = [], named = true): Promise<void> => {
    await runDetached(env, name, ['--network', n.name, '--dns', n.gw, '--stop-timeout', '1', ...extra]);
    if (named) expect(await nameDelay(name, n, RUN_DELAY)).toBeLessThanOrEqual(1_000);
  };
  /** How long after now the gateway answers the container's FQDN with its address; the largest kept under `what`. */
  const nameDelay = async (name: string, n: { name: string; gw: string }, what: string): Promise<number> => {
    const ip = await containerIp(env, name, n.name);
    const ms = await pollDelay(`the name of ${name}`, () => sameAs(n.gw, fqdn(name, n), [ip]));
    delays[what] = Math.max(delays[what] ?? 0, ms);
    return ms;
  };

  beforeAll(async () => {
    await createNet(NET_A, env.name);
    await createNet(NET_B, env.name);
    await createNet(NET_I, env.name, ['--internal']);
  }, 60_000);
  afterEach(async () => {
    await env.docker.removeAllContainers();
  }, 60_000);

  test('containers resolve each other by NAME, NAME.NETWORK.tsnet, alias and hostname through --dns <gateway>, also via Docker`s embedded DNS', async () => {
    await runOn(`alpha${TAG}`, NET_A, ['--network-alias', `svc${TAG}`, '--hostname', `host${TAG}`]);
    await runOn(`beta${TAG}`, NET_A);
    const alphaIp = await containerIp(env, `alpha${TAG}`, NET_A.name);
    for (const name of [`alpha${TAG}`, fqdn(`alpha${TAG}`, NET_A), `svc${TAG}`, fqdn(`svc${TAG}`, NET_A), fqdn(`host${TAG}`, NET_A)]) {
      const r = await nslookupIn(env.docker, `beta${TAG}`, name, NET_A.gw);
      expect({ name, addresses: r.addresses }).toEqual({ name, addresses: [alphaIp] });
    }
    // No server named: the container asks 127.0.0.11, which does not know the zone and forwards to --dns, i.e. tsnet.
    const viaEmbedded = await nslookupIn(env.docker, `beta${TAG}`, fqdn(`alpha${TAG}`, NET_A));
    expect(viaEmbedded.addresses).toEqual([alphaIp]);
  });

  test('the host and a LAN machine resolve names, aliases, FQDNs and PTR at a gateway and at the host address; AAAA and ip6.arpa on a dual-stack network', async () => {
    await runOn(`alpha${TAG}`, NET_A, ['--network-alias', `svc${TAG}`]);
    await runOn(`six${TAG}`, NET_B, ['--network-alias', `svc6${TAG}`]);
    const alphaIp = await containerIp(env, `alpha${TAG}`, NET_A.name);
    const sixIp = await containerIp(env, `six${TAG}`, NET_B.name);
    const sixIp6 = await env.docker.docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${NET_B.name}").GlobalIPv6Address}}`, `six${TAG}`]);
    expect(net.isIPv6(sixIp6)).toBe(true);

    for (const server of [NET_A.gw, up.hostAddress]) {
      for (const name of [fqdn(`alpha${TAG}`, NET_A), `alpha${TAG}.${NET_A.name}`, fqdn(`svc${TAG}`, NET_A)]) {
        expect({ server, name, answer: await a(server, name) }).toEqual({ server, name, answer: [alphaIp] });
      }
      const r = resolverAt(server);
      expect(await r.reverse(alphaIp)).toContain(fqdn(`alpha${TAG}`, NET_A));
      expect(await r.resolve6(fqdn(`six${TAG}`, NET_B))).toEqual([sixIp6]);
      expect(await r.resolve4(fqdn(`svc6${TAG}`, NET_B))).toEqual([sixIp]);
      expect(await r.reverse(sixIp6)).toContain(fqdn(`six${TAG}`, NET_B));
    }
    // A bare NAME at a gateway is that network's container.
    expect(await a(NET_A.gw, `alpha${TAG}`)).toEqual([alphaIp]);
    // The dual-stack network's IPv6 gateway answers too.
    expect(await resolverAt(NET_B.gw6).resolve4(fqdn(`six${TAG}`, NET_B))).toEqual([sixIp]);
    // A LAN machine (the upstream's namespace) asks the host address.
    const lan = await up.peer.exec('busybox', ['nslookup', fqdn(`alpha${TAG}`, NET_A), up.hostAddress]);
    expect(lan).toContain(`Address: ${alphaIp}`);
    // A gateway is no open resolver: routed to it, the LAN machine gets no answer there (only --dns-listen addresses).
    await runOk('ip', ['-n', up.peer.ns, 'route', 'add', `${NET_A.gw}/32`, 'via', up.hostAddress]);
    try {
      const r = await run('ip', ['netns', 'exec', up.peer.ns, 'timeout', '3', 'busybox', 'nslookup', fqdn(`alpha${TAG}`, NET_A), NET_A.gw]);
      expect(r.stdout).not.toContain(`Address: ${alphaIp}`);
      expect(r.code).not.toBe(0);
    } finally {
      await runOk('ip', ['-n', up.peer.ns, 'route', 'del', `${NET_A.gw}/32`]);
    }
  });

  test('NXDOMAIN for an unknown name in the zone, NODATA for AAAA on a v4-only name, SOA and NS at the zone, OPT only for EDNS queries', async () => {
    await runOn(`alpha${TAG}`, NET_A);
    const r = resolverAt(NET_A.gw);
    expect(await outcome(r.resolve4(fqdn(`nobody${TAG}`, NET_A)))).toBe('ENOTFOUND');
    expect(await outcome(r.resolve6(fqdn(`alpha${TAG}`, NET_A)))).toBe('ENODATA');
    const nx = await udpQuery(NET_A.gw, 53, fqdn(`nobody${TAG}`, NET_A), 'A');
    expect(nx).toMatchObject({ rcode: RCODE.NXDOMAIN, answers: [] });
    const nodata = await udpQuery(NET_A.gw, 53, fqdn(`alpha${TAG}`, NET_A), 'AAAA');
    expect(nodata).toMatchObject({ rcode: RCODE.NOERROR, answers: [] });
    const soa = await r.resolveSoa(ZONE);
    expect(soa.nsname).not.toBe('');
    expect(soa.minttl).toBeGreaterThanOrEqual(0);
    // The zone can be delegated: its NS name resolves (to the listener asked).
    const [ns] = await r.resolveNs(ZONE);
    expect(await r.resolve4(ns)).toEqual([NET_A.gw]);
    const soaRaw = await udpQuery(NET_A.gw, 53, ZONE, 'SOA');
    expect(soaRaw).toMatchObject({ rcode: RCODE.NOERROR, aa: true });
    const edns = await udpQuery(NET_A.gw, 53, fqdn(`alpha${TAG}`, NET_A), 'A', { edns: 1232 });
    expect(edns.opt).toBeDefined();
    expect(edns.answers).toHaveLength(1);
    expect((await udpQuery(NET_A.gw, 53, fqdn(`alpha${TAG}`, NET_A), 'A')).opt).toBeUndefined();
  });

  test('round robin: three containers sharing an alias give all three addresses, in changing order', async () => {
    const names = [0, 1, 2].map((i) => `rr${i}${TAG}`);
    // One after the other: each name within a second of its own start (a burst is the large-answer test's).
    for (const n of names) await runOn(n, NET_A, ['--network-alias', `pool${TAG}`]);
    const ips = (await Promise.all(names.map((n) => containerIp(env, n, NET_A.name)))).sort();
    const orders = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const answer = (await udpQuery(NET_A.gw, 53, fqdn(`pool${TAG}`, NET_A), 'A')).answers;
      expect([...answer].sort()).toEqual(ips);
      orders.add(answer.join(','));
    }
    expect(orders.size).toBeGreaterThan(1);
  });

  test('stop, start, rename, disconnect and connect show in the answers within one second', async () => {
    const c = `mover${TAG}`;
    const renamed = `moved${TAG}`;
    await runOn(c, NET_A);
    const ip = await containerIp(env, c, NET_A.name);
    expect(await a(NET_A.gw, fqdn(c, NET_A))).toEqual([ip]);

    await env.docker.docker(['stop', c]);
    expect(await observedDelay('stop', () => sameAs(NET_A.gw, fqdn(c, NET_A), 'ENOTFOUND'))).toBeLessThanOrEqual(1_000);
    await env.docker.docker(['start', c]);
    const ipAfterStart = await containerIp(env, c, NET_A.name);
    expect(await observedDelay('start', () => sameAs(NET_A.gw, fqdn(c, NET_A), [ipAfterStart]))).toBeLessThanOrEqual(1_000);
    await env.docker.docker(['rename', c, renamed]);
    expect(
      await observedDelay(
        'rename',
        async () => (await sameAs(NET_A.gw, fqdn(renamed, NET_A), [ipAfterStart])) && (await sameAs(NET_A.gw, fqdn(c, NET_A), 'ENOTFOUND')),
      ),
    ).toBeLessThanOrEqual(1_000);
    await env.docker.docker(['network', 'connect', NET_B.name, renamed]);
    const ipB = await containerIp(env, renamed, NET_B.name);
    expect(await observedDelay('connect', () => sameAs(NET_B.gw, fqdn(renamed, NET_B), [ipB]))).toBeLessThanOrEqual(1_000);
    await env.docker.docker(['network', 'disconnect', NET_A.name, renamed]);
    expect(await observedDelay('disconnect', () => sameAs(NET_A.gw, fqdn(renamed, NET_A), 'ENOTFOUND'))).toBeLessThanOrEqual(1_000);
    expect(await a(NET_B.gw, fqdn(renamed, NET_B))).toEqual([ipB]);
  });

  test('an external name is forwarded to the upstream; from an --internal network (listened on with --dns-internal) it never is', async () => {
    await runOn(`fwd${TAG}`, NET_A);
    await runOn(`inner${TAG}`, NET_I);
    // Forwarded: from the host through a gateway and the host address, from a container directly and via 127.0.0.11.
    expect(await a(NET_A.gw, EXT_WWW)).toEqual([EXT_WWW_IP]);
    expect(await a(up.hostAddress, EXT_WWW)).toEqual([EXT_WWW_IP]);
    expect((await nslookupIn(env.docker, `fwd${TAG}`, EXT_WWW, NET_A.gw)).addresses).toEqual([EXT_WWW_IP]);
    expect((await nslookupIn(env.docker, `fwd${TAG}`, `sent1.${EXT}`)).error).toBe('NXDOMAIN');
    await up.waitForQuery(`sent1.${EXT}`);
    expect(up.queries().map((q) => q.name)).toContain(EXT_WWW);

    // Internal: the gateway listener answers the network's own names but forwards nothing, whoever asks it.
    const innerIp = await containerIp(env, `inner${TAG}`, NET_I.name);
    expect((await nslookupIn(env.docker, `inner${TAG}`, fqdn(`inner${TAG}`, NET_I), NET_I.gw)).addresses).toEqual([innerIp]);
    const fromContainer = await nslookupIn(env.docker, `inner${TAG}`, `leak1.${EXT}`, NET_I.gw);
    expect(['REFUSED', 'SERVFAIL']).toContain(fromContainer.error);
    const viaEmbedded = await nslookupIn(env.docker, `inner${TAG}`, `leak2.${EXT}`);
    expect(viaEmbedded.addresses).toEqual([]);
    const fromHost = await udpQuery(NET_I.gw, 53, `leak3.${EXT}`, 'A');
    expect([RCODE.REFUSED, RCODE.SERVFAIL]).toContain(fromHost.rcode);
    // A forwarded sentinel after them: once the upstream has logged it, it would have logged the leaks before it.
    expect(await a(NET_A.gw, `sent2.${EXT}`)).toBe('ENOTFOUND');
    await up.waitForQuery(`sent2.${EXT}`);
    expect(up.queries().filter((q) => q.name.startsWith('leak'))).toEqual([]);
  });

  test('a dead upstream: an external name ends in SERVFAIL, local names answer meanwhile, forwarding resumes with the upstream', async () => {
    await runOn(`alpha${TAG}`, NET_A);
    const alphaIp = await containerIp(env, `alpha${TAG}`, NET_A.name);
    up.pause();
    try {
      let forwardDone = false;
      const forwarded = udpQuery(NET_A.gw, 53, `dead1.${EXT}`, 'A', { timeoutMs: 15_000 }).finally(() => (forwardDone = true));
      for (let i = 0; i < 5; i++) {
        expect((await udpQuery(NET_A.gw, 53, fqdn(`alpha${TAG}`, NET_A), 'A', { timeoutMs: 1_000 })).answers).toEqual([alphaIp]);
      }
      // The local answers came while the forwarded query still waited on the upstream.
      expect(forwardDone).toBe(false);
      expect((await forwarded).rcode).toBe(RCODE.SERVFAIL);
    } finally {
      up.resume();
    }
    expect(await a(NET_A.gw, `back.${EXT}`)).toBe('ENOTFOUND');
    await up.waitForQuery(`back.${EXT}`);
  });

  test('without --dns-internal no listener on an internal gateway; one named by --dns-listen answers, never forwarding for its containers', async () => {
    const name2 = uniquePluginName();
    const dir = path.join(env.dockerd.dir, 'tsnet2');
    tsnet2 = await startTsnet({
      name: name2,
      stateDir: path.join(dir, 'state'),
      logFile: path.join(dir, 'tsnet.log'),
      // NET_I3's gateway does not exist yet: tsnet binds it once the network brings it.
      extraArgs: ['--docker-socket', env.dockerd.socket, '--dns-upstream', up.address, '--dns-listen', 'gateways', '--dns-listen', NET_I3.gw],
    });
    await createNet(NET_P2, name2);
    await createNet(NET_I2, name2, ['--internal']);
    await createNet(NET_I3, name2, ['--internal']);
    await runOn(`plain${TAG}`, NET_P2, [], false);
    await runOn(`hidden${TAG}`, NET_I2, [], false);
    const plainIp = await containerIp(env, `plain${TAG}`, NET_P2.name);
    // Its listeners work: the plain network's gateway answers.
    await observedDelay('second tsnet answers', () => sameAs(NET_P2.gw, fqdn(`plain${TAG}`, NET_P2), [plainIp]), 5_000);
    expect(await listening(NET_P2.gw)).toBe(true);
    expect(await listening(NET_I2.gw)).toBe(false);
    // The gateway is on the second tsnet's bridge (so the query below stays on this host) and nobody answers there.
    expect(await hostHas(NET_I2.gw)).toBe(true);
    expect(['ECONNREFUSED', 'ETIMEOUT']).toContain(await a(NET_I2.gw, fqdn(`hidden${TAG}`, NET_I2)));

    // A host-address listener on an internal network's gateway: its containers get names, never forwarding.
    await runOn(`walled${TAG}`, NET_I3, [], false);
    const walledIp = await containerIp(env, `walled${TAG}`, NET_I3.name);
    await observedDelay(
      'listener on a named internal gateway',
      async () => (await nslookupIn(env.docker, `walled${TAG}`, fqdn(`walled${TAG}`, NET_I3), NET_I3.gw)).addresses.includes(walledIp),
      10_000,
    );
    expect(['REFUSED', 'SERVFAIL']).toContain((await nslookupIn(env.docker, `walled${TAG}`, `leak4.${EXT}`, NET_I3.gw)).error);
    expect(await a(NET_P2.gw, `sent3.${EXT}`)).toBe('ENOTFOUND');
    await up.waitForQuery(`sent3.${EXT}`);
    expect(up.queries().filter((q) => q.name.startsWith('leak'))).toEqual([]);
  });

  test('listeners follow networks: a new network`s gateway answers, a removed network`s gateway no longer listens', async () => {
    await createNet(NET_N, env.name);
    // Before any container event: the network alone opens its listener.
    await observedDelay(
      'new network listener',
      async () => (await listening(NET_N.gw)) && typeof (await outcome(resolverAt(NET_N.gw, 53, 500).resolveSoa(ZONE))) !== 'string',
    );
    await runOn(`newbie${TAG}`, NET_N, [], false);
    const ip = await containerIp(env, `newbie${TAG}`, NET_N.name);
    expect(await observedDelay('name on the new network', () => sameAs(NET_N.gw, fqdn(`newbie${TAG}`, NET_N), [ip]))).toBeLessThanOrEqual(1_000);
    await env.docker.docker(['rm', '-f', `newbie${TAG}`]);
    await env.docker.docker(['network', 'rm', NET_N.name]);
    // A socket bound to an address the host no longer has stays bound until tsnet closes it.
    await observedDelay('removed network listener', async () => !(await listening(NET_N.gw)));
  });

  test('TCP for a large answer: an alias on 32 containers is truncated over UDP (TC, OPT kept) and whole over TCP', async () => {
    await createNet(NET_BIG, env.name);
    const names = Array.from({ length: 32 }, (_, i) => `big${i}x${TAG}`);
    for (let i = 0; i < names.length; i += 8) {
      // Eight at once, like a compose up: how late a name comes under such a burst is measured, not bounded.
      await Promise.all(
        names.slice(i, i + 8).map(async (n) => {
          await runOn(n, NET_BIG, ['--network-alias', `crowd${TAG}`], false);
          await nameDelay(n, NET_BIG, 'docker run of 8 at once → name (max)');
        }),
      );
    }
    const ips = (await Promise.all(names.map((n) => containerIp(env, n, NET_BIG.name)))).sort();
    const name = fqdn(`crowd${TAG}`, NET_BIG);
    await observedDelay('32 containers named', async () => (await tcpQuery(NET_BIG.gw, 53, name, 'A')).answers.length === 32, 10_000);
    const plain = await udpQuery(NET_BIG.gw, 53, name, 'A');
    expect(plain.tc).toBe(true);
    expect(plain.size).toBeLessThanOrEqual(512);
    const edns = await udpQuery(NET_BIG.gw, 53, name, 'A', { edns: 512 });
    expect(edns.tc).toBe(true);
    expect(edns.size).toBeLessThanOrEqual(512);
    expect(edns.opt).toBeDefined();
    const big = await udpQuery(NET_BIG.gw, 53, name, 'A', { edns: 4096 });
    expect(big.tc).toBe(false);
    expect([...big.answers].sort()).toEqual(ips);
    const tcp = await tcpQuery(NET_BIG.gw, 53, name, 'A');
    expect(tcp.tc).toBe(false);
    expect([...tcp.answers].sort()).toEqual(ips);
    // node's resolver falls back to TCP on TC by itself.
    expect(await a(NET_BIG.gw, name)).toEqual(ips);
  });

  /** phoenix (`--restart always`) answers with its current address and mortal (no restart policy) is gone. */
  const phoenixBack = async (): Promise<boolean> => {
    const ip = await containerIp(env, `phoenix${TAG}`, NET_A.name).catch(() => '');
    return (
      ip !== '' && (await sameAs(NET_A.gw, fqdn(`phoenix${TAG}`, NET_A), [ip])) && (await sameAs(NET_A.gw, fqdn(`mortal${TAG}`, NET_A), 'ENOTFOUND'))
    );
  };

  test('dockerd restarted: names come back (a restarted container with its address, a stopped one gone)', async () => {
    await runOn(`phoenix${TAG}`, NET_A, ['--restart', 'always']);
    await runOn(`mortal${TAG}`, NET_A);
    expect(await a(NET_A.gw, fqdn(`mortal${TAG}`, NET_A))).toEqual([await containerIp(env, `mortal${TAG}`, NET_A.name)]);
    await env.dockerd.stop();
    // Docker's API socket is gone: plugin calls are still answered.
    expect((await env.tsnet.call('Plugin.Activate', {})).status).toBe(200);
    await env.dockerd.start();
    await observedDelay('names after dockerd restart', () => phoenixBack(), 15_000);
  }, 90_000);

  test('dockerd killed (-9): plugin calls answered and the network works while its API is gone; after its start the names resync and events flow', async () => {
    await runOn(`phoenix${TAG}`, NET_A, ['--restart', 'always']);
    await runOn(`mortal${TAG}`, NET_A);
    const mortalIp = await containerIp(env, `mortal${TAG}`, NET_A.name);
    const phoenixPid = await env.docker.docker(['inspect', '-f', '{{.State.Pid}}', `phoenix${TAG}`]);
    await env.dockerd.kill9();
    try {
      expect((await env.tsnet.call('Plugin.Activate', {})).status).toBe(200);
      // The data plane: the containers still reach each other (dockerd's shims keep them running).
      expect((await run('nsenter', ['-t', phoenixPid, '-n', 'busybox', 'ping', '-c', '1', '-W', '2', mortalIp])).code).toBe(0);
      // What tsnet knew stays answered while Docker's API is down.
      expect(await a(NET_A.gw, fqdn(`mortal${TAG}`, NET_A))).toEqual([mortalIp]);
    } finally {
      await env.dockerd.start();
    }
    // dockerd (no live-restore) killed the orphans while starting, unseen by the events stream: only a resync shows it.
    await observedDelay('names after dockerd kill -9', () => phoenixBack(), 15_000);
    // The events stream follows again.
    await runOn(`later${TAG}`, NET_A, [], false);
    const laterIp = await containerIp(env, `later${TAG}`, NET_A.name);
    expect(await observedDelay('event after dockerd kill -9', () => sameAs(NET_A.gw, fqdn(`later${TAG}`, NET_A), [laterIp]))).toBeLessThanOrEqual(
      1_000,
    );
  }, 90_000);

  test('a fixed-seed fuzz burst at a gateway listener (UDP and TCP): tsnet stays up and answers a good query', async () => {
    await runOn(`alpha${TAG}`, NET_A);
    const alphaIp = await containerIp(env, `alpha${TAG}`, NET_A.name);
    const pid = env.tsnet.pid;
    // The unit fuzz's generator (valid queries, their mutations, random bytes), here at a real listener.
    const packets = [...fuzzPackets(0x5eed, 3_000)];
    await udpBlast(NET_A.gw, 53, packets);
    // Garbage on TCP, framed: the connection may close or stay silent; the server must do neither for good.
    await Promise.all(packets.slice(0, 40).map((p) => tcpExchange(NET_A.gw, 53, [p], 500).catch(() => undefined)));
    await tcpRaw(NET_A.gw, Buffer.from([0xff, 0xff, 1, 2, 3]));
    expect(env.tsnet.pid).toBe(pid);
    expect(await a(NET_A.gw, fqdn(`alpha${TAG}`, NET_A))).toEqual([alphaIp]);
    expect((await tcpQuery(NET_A.gw, 53, fqdn(`alpha${TAG}`, NET_A), 'A')).answers).toEqual([alphaIp]);
    const good = encodeQuery(fqdn(`alpha${TAG}`, NET_A), 'A');
    expect(decodeReply(await udpExchange(NET_A.gw, 53, good)).answers).toEqual([alphaIp]);
    expect((await env.tsnet.call('Plugin.Activate', {})).status).toBe(200);
  });
});

/** Whether a UDP socket is bound to `address:53` on the host (`ss`), whoever owns it. */
async function listening(address: string): Promise<boolean> {
  const { stdout } = await runOk('ss', ['-H', '-uln', 'src', `${address}:53`]);
  return stdout.trim() !== '';
}

/** Whether `address` is one of the host's own (so a query to it never leaves the machine). */
async function hostHas(address: string): Promise<boolean> {
  const { stdout } = await runOk('ip', ['-json', 'addr', 'show']);
  return (JSON.parse(stdout) as Array<{ addr_info?: Array<{ local: string }> }>).some((l) => (l.addr_info ?? []).some((x) => x.local === address));
}

/** Writes `bytes` on a fresh TCP connection to port 53 and closes it. */
async function tcpRaw(server: string, bytes: Buffer): Promise<void> {
  await new Promise<void>((resolve) => {
    const sock = net.connect({ host: server, port: 53 }, () => sock.end(bytes));
    sock.on('error', () => resolve());
    sock.on('close', () => resolve());
    sock.setTimeout(1_000, () => sock.destroy());
  });
}
