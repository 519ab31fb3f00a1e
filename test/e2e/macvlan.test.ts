import { containerIp, ownLinks, ping, runDetached, storeRows } from '../harness/containers';
import { eventually, run, runOk, sleep } from '../harness/exec';
import { addrsOn, describeE2E } from '../harness/host';
import { DockerHost } from '../harness/dockerhost';
import { tcpFrom } from '../harness/hostns';
import type { Docker } from '../harness/dockerd';
import { type E2EEnv, setupE2E } from '../harness/tsnet';
import { allLinkDetails, type LinkDetail, macvlanChildren, makeWire, pingFrom, routeDev, routes, type Wire, type WireOptions, wireTag } from '../harness/wire';

/**
 * macvlan networks through the docker CLI against a private dockerd, on a veth "wire" whose host end is the parent
 * NIC and whose far end is a LAN machine (a namespace) or a second host. Where Docker's own macvlan driver shows
 * what the kernel and dockerd do, the same test runs against it (`docker`), so the tsnet run is checked against a
 * reference and not against the test's own expectations alone.
 */
jest.setTimeout(120_000);

/** A container command answering every TCP connection on port 8080 with "hello". */
const SERVER = ['nc', '-ll', '-p', '8080', '-e', 'echo', 'hello'];

/** What a TCP connection from `ns` (the host namespace when undefined) to ip:8080 gets, once SERVER has had time to listen. */
async function fetchHello(ns: string | undefined, ip: string): Promise<string | undefined> {
  let got: string | undefined;
  // A container just started may not listen yet (connection refused); a path that is cut stays cut.
  await eventually(async () => expect((got = await tcpFrom(ns, ip, 8080))).toBe('hello\n')).catch(() => undefined);
  return got;
}

type Flavour = 'tsnet' | 'docker';
const FLAVOURS: readonly Flavour[] = ['tsnet', 'docker'];

/** Docker's own macvlan driver, where a test runs against it too. */
const DOCKER_MACVLAN = 'macvlan';

/**
 * `docker network create` arguments for a macvlan network on `parent` with subnet `s.0/24` and gateway `s.1`:
 * Docker's macvlan driver with its IPAM, or the tsnet named `driver` with its own.
 */
function createArgs(driver: string, parent: string, s: string, extra: readonly string[] = []): string[] {
  const how = driver === DOCKER_MACVLAN ? ['-d', driver] : ['-d', driver, '--ipam-driver', driver, '-o', 'mode=macvlan'];
  return ['network', 'create', ...how, '-o', `parent=${parent}`, '--subnet', `${s}.0/24`, '--gateway', `${s}.1`, ...extra];
}

/** The container's `ifname` as the kernel sees it, read from outside (busybox's ip prints no link details). */
async function containerLink(on: { docker: Docker }, container: string, ifname = 'eth0'): Promise<LinkDetail | undefined> {
  const pid = await on.docker.docker(['inspect', '-f', '{{.State.Pid}}', container]);
  const { stdout } = await runOk('nsenter', ['-t', pid, '-n', 'ip', '-d', '-json', 'link', 'show']);
  return (JSON.parse(stdout) as LinkDetail[]).find((l) => l.ifname === ifname);
}

async function ifindexOf(name: string): Promise<number | undefined> {
  return (await allLinkDetails()).find((l) => l.ifname === name)?.ifindex;
}

/** Docker's (and tsnet's) MAC for an IPv4 address: 02:42 and the four address bytes. */
function macFor(ip: string): string {
  return ['02', '42', ...ip.split('.').map((b) => Number(b).toString(16).padStart(2, '0'))].join(':');
}

/** `ip route` lines for destination `ip` (as a host route or a prefix starting there). */
async function routesTo(ip: string): Promise<string[]> {
  return (await routes()).filter((r) => r.startsWith(`${ip} `) || r.startsWith(`${ip}/`));
}

/** tsnet's macvlan links in the host namespace on `parent` (the host shim is the only one it keeps there). */
async function ownChildren(env: E2EEnv, parent: string): Promise<string[]> {
  const own = new Set(await ownLinks(env));
  return (await macvlanChildren(parent)).filter((l) => own.has(l));
}

describeE2E('macvlan networks', () => {
  const env = setupE2E({ dockerd: { iptables: true } });
  const wires: Wire[] = [];
  const extraCleanup: Array<() => Promise<void>> = [];
  const driverOf = (flavour: Flavour): string => (flavour === 'tsnet' ? env.name : DOCKER_MACVLAN);

  async function wire(opts: WireOptions = {}): Promise<Wire> {
    const w = await makeWire(wireTag(), opts);
    wires.push(w);
    return w;
  }

  afterEach(async () => {
    // A failed test must not leave networks or wires the next one trips over; networks go before their parents.
    await env.docker.removeAllContainers();
    await env.docker.removeCustomNetworks();
    for (const fn of extraCleanup.splice(0)) await fn();
    for (const w of wires.splice(0)) await w.remove();
  });

  test.each(FLAVOURS)('the operator flow (%s): --ip honoured, containers reach each other and the LAN, inspect, rm leaves nothing', async (flavour) => {
    const d = env.docker;
    const s = flavour === 'tsnet' ? '172.21.0' : '172.21.1';
    const w = await wire({ lanAddrs: [`${s}.2/24`] });
    const net = `op-${flavour}`;
    await d.docker([...createArgs(driverOf(flavour), w.parent, s), net]);
    expect(JSON.parse(await d.docker(['network', 'inspect', net, '-f', '{{json .IPAM.Config}}']))).toMatchObject([{ Subnet: `${s}.0/24`, Gateway: `${s}.1` }]);
    expect(await d.docker(['network', 'inspect', net, '-f', '{{index .Options "parent"}}'])).toBe(w.parent);

    await runDetached(env, 'ca', ['--network', net, '--ip', `${s}.10`]);
    await runDetached(env, 'cb', ['--network', net, '--ip', `${s}.11`]);
    expect(await containerIp(env, 'ca', net)).toBe(`${s}.10`);
    expect(await containerIp(env, 'cb', net)).toBe(`${s}.11`);
    // In the container: a macvlan child of the parent in bridge mode, the MAC from the address, the gateway route.
    const link = await containerLink(env, 'ca');
    expect(link?.linkinfo?.info_kind).toBe('macvlan');
    expect(link?.linkinfo?.info_data?.mode).toBe('bridge');
    expect(link?.link_index).toBe(await ifindexOf(w.parent));
    expect(link?.address).toBe(macFor(`${s}.10`));
    expect(await d.docker(['exec', 'ca', 'ip', 'route'])).toMatch(new RegExp(`default via ${s}\\.1 dev eth0`));
    expect(await d.docker(['exec', 'ca', 'ip', '-o', '-4', 'addr', 'show', 'eth0'])).toContain(`${s}.10/24`);
    // The children live in the containers, none is left in the host namespace.
    expect(await macvlanChildren(w.parent)).toEqual([]);

    expect(await ping(env, 'ca', `${s}.11`)).toBe(true);
    expect(await ping(env, 'cb', `${s}.10`)).toBe(true);
    expect(await ping(env, 'ca', `${s}.2`)).toBe(true);
    expect(await w.reaches(`${s}.10`)).toBe(true);
    expect(await w.reaches(`${s}.11`)).toBe(true);
    const shown = await d.docker(['network', 'inspect', net, '-f', '{{range .Containers}}{{.Name}}={{.IPv4Address}} {{end}}']);
    expect(shown.split(' ').filter((x) => x !== '').sort()).toEqual([`ca=${s}.10/24`, `cb=${s}.11/24`]);
    if (flavour === 'tsnet') expect(storeRows(env)).toMatchObject({ network: 1, endpoint: 2 });

    await d.docker(['rm', '-f', 'ca', 'cb']);
    // dockerd moves each child back to the host namespace on Leave; the driver must delete it there.
    await eventually(async () => expect(await macvlanChildren(w.parent)).toEqual([]));
    await d.docker(['network', 'rm', net]);
    if (flavour === 'tsnet') {
      await eventually(() => expect(storeRows(env)).toEqual({}));
      await eventually(async () => expect(await ownLinks(env)).toEqual([]));
    }
    // The parent is the host's NIC: never deleted, never changed.
    const parent = (await allLinkDetails()).find((l) => l.ifname === w.parent);
    expect(parent?.flags).toContain('UP');
    expect(parent?.master).toBeUndefined();
    expect(await macvlanChildren(w.parent)).toEqual([]);
  }, 120_000);

  test.each(FLAVOURS)('macvlan_mode (%s): private containers never reach each other, vepa ones only through a reflecting switch; both reach the LAN', async (flavour) => {
    const d = env.docker;
    const [sp, sv] = flavour === 'tsnet' ? ['172.22.0', '172.22.1'] : ['172.22.2', '172.22.3'];
    const wp = await wire({ lanAddrs: [`${sp}.2/24`], hairpin: true });
    const wv = await wire({ lanAddrs: [`${sv}.2/24`], hairpin: true });
    await d.docker([...createArgs(driverOf(flavour), wp.parent, sp, ['-o', 'macvlan_mode=private']), `priv-${flavour}`]);
    await d.docker([...createArgs(driverOf(flavour), wv.parent, sv, ['-o', 'macvlan_mode=vepa']), `vepa-${flavour}`]);
    await runDetached(env, 'p1', ['--network', `priv-${flavour}`, '--ip', `${sp}.10`]);
    await runDetached(env, 'p2', ['--network', `priv-${flavour}`, '--ip', `${sp}.11`]);
    await runDetached(env, 'v1', ['--network', `vepa-${flavour}`, '--ip', `${sv}.10`]);
    await runDetached(env, 'v2', ['--network', `vepa-${flavour}`, '--ip', `${sv}.11`]);
    expect((await containerLink(env, 'p1'))?.linkinfo?.info_data?.mode).toBe('private');
    expect((await containerLink(env, 'v1'))?.linkinfo?.info_data?.mode).toBe('vepa');

    // private: even a switch that reflects frames does not bring siblings together.
    expect(await ping(env, 'p1', `${sp}.11`)).toBe(false);
    expect(await ping(env, 'p1', `${sp}.2`)).toBe(true);
    expect(await wp.reaches(`${sp}.11`)).toBe(true);
    // vepa: siblings talk through the switch's hairpin, so not at all once the switch stops reflecting.
    expect(await ping(env, 'v1', `${sv}.11`)).toBe(true);
    expect(await ping(env, 'v2', `${sv}.2`)).toBe(true);
    await wv.exec('ip', ['link', 'set', wv.farIf, 'type', 'bridge_slave', 'hairpin', 'off']);
    expect(await ping(env, 'v1', `${sv}.11`)).toBe(false);
    expect(await ping(env, 'v1', `${sv}.2`)).toBe(true);
  }, 120_000);

  test.each(FLAVOURS)('the seeds\' two-host example (%s): 172.20.0.10 on host A and 172.20.0.11 on host B, each with its dockerd (and tsnet), ping each other across the wire', async (flavour) => {
    // Host B: a namespace with its own dockerd and tsnet; the wire's far end is its NIC.
    const hostB = await DockerHost.create();
    extraCleanup.push(() => hostB.destroy());
    const w = await wire({ farNs: hostB.ns });
    await env.docker.docker([...createArgs(driverOf(flavour), w.parent, '172.20.0'), 'mynet1']);
    await hostB.docker.docker([...createArgs(flavour === 'tsnet' ? hostB.name : DOCKER_MACVLAN, w.farIf, '172.20.0'), 'mynet1']);
    await runDetached(env, 'demo1', ['--network', 'mynet1', '--ip', '172.20.0.10']);
    await runDetached(hostB, 'demo2', ['--network', 'mynet1', '--ip', '172.20.0.11']);
    expect((await containerLink(hostB, 'demo2'))?.linkinfo?.info_kind).toBe('macvlan');

    expect(await ping(env, 'demo1', '172.20.0.11')).toBe(true);
    expect(await ping(hostB, 'demo2', '172.20.0.10')).toBe(true);
    // No NAT, no bridge: each side sees the other's container with its own MAC on the wire.
    expect(await hostB.docker.docker(['exec', 'demo2', 'ip', 'neigh', 'show', '172.20.0.10'])).toContain(macFor('172.20.0.10'));
    expect(await env.docker.docker(['exec', 'demo1', 'ip', 'neigh', 'show', '172.20.0.11'])).toContain(macFor('172.20.0.11'));
    await hostB.docker.docker(['rm', '-f', 'demo2']);
    await hostB.docker.docker(['network', 'rm', 'mynet1']);
    await eventually(async () => expect(await allLinkDetails(hostB.ns)).toHaveLength(2)); // lo and its NIC
  }, 120_000);

  test('host shim: the host reaches its own macvlan containers (ping, TCP) through a shim, Docker\'s macvlan cannot; the shim and its routes go with the network', async () => {
    const d = env.docker;
    const w = await wire({ lanAddrs: ['172.23.0.2/24'], hostAddrs: ['172.23.0.3/24'] });
    const wa = await wire({ lanAddrs: ['172.23.1.2/24'], hostAddrs: ['172.23.1.3/24'] });
    const wd = await wire({ lanAddrs: ['172.23.2.2/24'], hostAddrs: ['172.23.2.3/24'] });
    const routesBefore = await routes();
    const shimOpts = ['-o', 'tsnet.host_shim=true'];
    await d.docker([...createArgs(env.name, w.parent, '172.23.0', [...shimOpts, '--aux-address', 'host_shim=172.23.0.250']), 'shim1']);
    // The LAN's machines (.2, .3) are outside the range the IPAM allocates from, as on a real LAN.
    await d.docker([...createArgs(env.name, wa.parent, '172.23.1', [...shimOpts, '--ip-range', '172.23.1.64/26']), 'shim2']);
    await d.docker([...createArgs(DOCKER_MACVLAN, wd.parent, '172.23.2'), 'dmv']);
    await runDetached(env, 's1', ['--network', 'shim1', '--ip', '172.23.0.10'], SERVER);
    await runDetached(env, 's2', ['--network', 'shim2'], SERVER);
    await runDetached(env, 'sd', ['--network', 'dmv', '--ip', '172.23.2.10'], SERVER);

    // One shim per network: a bridge-mode macvlan of the parent in the host namespace, tsnet's, up, a /32.
    const shims = [await ownChildren(env, w.parent), await ownChildren(env, wa.parent)];
    expect(shims.map((l) => l.length)).toEqual([1, 1]);
    const [shim, shimA] = shims.map((l) => l[0] ?? '');
    const shimLink = (await allLinkDetails()).find((l) => l.ifname === shim);
    expect(shimLink?.linkinfo?.info_data?.mode).toBe('bridge');
    expect(shimLink?.flags).toContain('UP');
    expect((await addrsOn(shim)).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`)).toEqual(['172.23.0.250/32']);
    // Allocated from tsnet's pool: an address of the subnet that is neither the gateway nor a container's.
    const s2ip = await containerIp(env, 's2', 'shim2');
    const shimAaddrs = (await addrsOn(shimA)).filter((a) => a.family === 'inet');
    expect(shimAaddrs).toHaveLength(1);
    expect(shimAaddrs[0]?.prefixlen).toBe(32);
    expect(shimAaddrs[0]?.local).toMatch(/^172\.23\.1\.\d+$/);
    expect(['172.23.1.1', '172.23.1.2', '172.23.1.3', s2ip]).not.toContain(shimAaddrs[0]?.local);
    expect(s2ip).toMatch(/^172\.23\.1\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])$/);

    // The host reaches the containers through the shims; its own route to the LAN stays on the parent.
    expect(await routeDev('172.23.0.10')).toBe(shim);
    expect(await routeDev('172.23.0.2')).toBe(w.parent);
    expect((await pingFrom(undefined, '172.23.0.10')).received).toBe(1);
    expect((await pingFrom(undefined, s2ip)).received).toBe(1);
    expect(await fetchHello(undefined, '172.23.0.10')).toBe('hello\n');
    expect(await fetchHello(undefined, s2ip)).toBe('hello\n');
    expect((await pingFrom(undefined, '172.23.0.2')).received).toBe(1);
    expect(await ping(env, 's1', '172.23.0.2')).toBe(true);
    // Docker's macvlan: the container is up (the LAN reaches it) but the host, whose NIC is its parent, does not.
    expect(await wd.reaches('172.23.2.10')).toBe(true);
    expect((await pingFrom(undefined, '172.23.2.10')).received).toBe(0);
    expect(await fetchHello(wd.farNs, '172.23.2.10')).toBe('hello\n');
    expect(await tcpFrom(undefined, '172.23.2.10', 8080)).toBeUndefined();

    // A container's route comes and goes with its endpoint.
    await runDetached(env, 's3', ['--network', 'shim1', '--ip', '172.23.0.11'], SERVER);
    expect(await routeDev('172.23.0.11')).toBe(shim);
    expect(await fetchHello(undefined, '172.23.0.11')).toBe('hello\n');
    await d.docker(['rm', '-f', 's3']);
    await eventually(async () => expect(await routesTo('172.23.0.11')).toEqual([]));

    await d.docker(['rm', '-f', 's1', 's2']);
    await d.docker(['network', 'rm', 'shim1', 'shim2']);
    await eventually(async () => {
      expect(await ownLinks(env)).toEqual([]);
      expect(await macvlanChildren(w.parent)).toEqual([]);
      expect(await macvlanChildren(wa.parent)).toEqual([]);
    });
    expect(await routes()).toEqual(routesBefore);
    expect((await addrsOn(w.parent)).map((a) => a.local)).toContain('172.23.0.3');
    await eventually(() => expect(storeRows(env)).toEqual({}));
  }, 120_000);

  test('connect/disconnect and stop/start: the address is kept, no child link is left in the host namespace', async () => {
    const d = env.docker;
    const w1 = await wire({ lanAddrs: ['172.24.0.2/24'] });
    const w2 = await wire({ lanAddrs: ['172.24.1.2/24'] });
    await d.docker([...createArgs(env.name, w1.parent, '172.24.0', ['--ip-range', '172.24.0.64/26']), 'j1']);
    await d.docker([...createArgs(env.name, w2.parent, '172.24.1'), 'j2']);
    await runDetached(env, 'cj', ['--network', 'j1', '--ip', '172.24.0.10']);
    await runDetached(env, 'auto', ['--network', 'j1']);
    const autoIp = await containerIp(env, 'auto', 'j1');

    await d.docker(['network', 'connect', '--ip', '172.24.1.10', 'j2', 'cj']);
    expect(await d.docker(['exec', 'cj', 'ip', '-o', '-4', 'addr', 'show', 'eth1'])).toContain('172.24.1.10/24');
    expect((await containerLink(env, 'cj', 'eth1'))?.link_index).toBe(await ifindexOf(w2.parent));
    expect(await w2.reaches('172.24.1.10')).toBe(true);
    expect(await ping(env, 'cj', '172.24.1.2')).toBe(true);
    expect(await macvlanChildren(w2.parent)).toEqual([]);

    await d.docker(['network', 'disconnect', 'j2', 'cj']);
    expect((await d.dockerTry(['exec', 'cj', 'ip', 'link', 'show', 'eth1'])).code).not.toBe(0);
    await eventually(async () => expect(await macvlanChildren(w2.parent)).toEqual([]));
    expect(await ownLinks(env)).toEqual([]);
    expect(await w2.reaches('172.24.1.10')).toBe(false);
    expect(await w1.reaches('172.24.0.10')).toBe(true);

    await d.docker(['stop', '-t', '0', 'cj', 'auto']);
    await eventually(async () => expect(await macvlanChildren(w1.parent)).toEqual([]));
    expect(await ownLinks(env)).toEqual([]);
    expect(await w1.reaches('172.24.0.10')).toBe(false);
    await d.docker(['start', 'cj', 'auto']);
    expect(await containerIp(env, 'cj', 'j1')).toBe('172.24.0.10');
    expect(await d.docker(['exec', 'cj', 'ip', '-o', '-4', 'addr', 'show', 'eth0'])).toContain('172.24.0.10/24');
    expect(await w1.reaches('172.24.0.10')).toBe(true);
    const autoIpAfter = await containerIp(env, 'auto', 'j1');
    expect(autoIpAfter).toBe(autoIp);
    expect(await w1.reaches(autoIpAfter)).toBe(true);

    await d.docker(['rm', '-f', 'cj', 'auto']);
    await eventually(async () => expect(await macvlanChildren(w1.parent)).toEqual([]));
    await d.docker(['network', 'rm', 'j1', 'j2']);
    await eventually(() => expect(storeRows(env)).toEqual({}));
    expect(await ownLinks(env)).toEqual([]);
  }, 120_000);

  test('kill -9 of tsnet with macvlan networks and containers up: traffic goes on during and after, nothing leaks, rm removes exactly what tsnet made; Docker\'s macvlan is left alone', async () => {
    const d = env.docker;
    const w = await wire({ lanAddrs: ['172.25.0.2/24'], hostAddrs: ['172.25.0.3/24'] });
    const wd = await wire({ lanAddrs: ['172.25.1.2/24'] });
    const parentBefore = (await allLinkDetails()).find((l) => l.ifname === w.parent);
    const routesBefore = await routes();
    await d.docker([...createArgs(DOCKER_MACVLAN, wd.parent, '172.25.1'), 'dk']);
    await runDetached(env, 'k0', ['--network', 'dk', '--ip', '172.25.1.10']);
    await d.docker([...createArgs(env.name, w.parent, '172.25.0', ['-o', 'tsnet.host_shim=true', '--aux-address', 'host_shim=172.25.0.250']), 'kn']);
    await runDetached(env, 'k1', ['--network', 'kn', '--ip', '172.25.0.10'], SERVER);
    await runDetached(env, 'k2', ['--network', 'kn', '--ip', '172.25.0.11'], SERVER);
    const shims = await ownChildren(env, w.parent);
    expect(shims).toHaveLength(1);
    const state = async (): Promise<unknown> => ({
      own: await ownLinks(env),
      children: await macvlanChildren(w.parent),
      routes: await routes(),
      store: storeRows(env),
      shimAddrs: (await addrsOn(shims[0] ?? '')).filter((x) => x.family === 'inet'),
      // The same link, not one made again (that would cut the host's path for a moment).
      shimIndex: await ifindexOf(shims[0] ?? ''),
    });
    const before = await state();

    // 40 pings 0.1 s apart on three paths (LAN → container, host → container through the shim, container →
    // container) while tsnet is killed and started again.
    const count = 40;
    const during = Promise.all([
      w.pings('172.25.0.10', count, 0.1),
      pingFrom(undefined, '172.25.0.11', count, 0.1),
      d.dockerTry(['exec', 'k1', 'ping', '-c', String(count), '-i', '0.1', '-W', '1', '172.25.0.11'], { timeoutMs: 60_000 }),
    ]);
    await sleep(500);
    await env.tsnet.kill9();
    await sleep(500);
    await env.tsnet.start();
    const [lan, host, c2c] = await during;
    expect(lan).toEqual({ sent: count, received: count });
    expect(host).toEqual({ sent: count, received: count });
    expect(c2c.stdout).toContain(`${count} packets transmitted, ${count} packets received`);

    // Reconciled in place: the same links, routes, shim address and records; everything still reachable.
    expect(await state()).toEqual(before);
    expect(await w.reaches('172.25.0.11')).toBe(true);
    expect(await fetchHello(undefined, '172.25.0.10')).toBe('hello\n');
    expect((await pingFrom(undefined, '172.25.0.10')).received).toBe(1);
    expect(await wd.reaches('172.25.1.10')).toBe(true);

    await d.docker(['rm', '-f', 'k1', 'k2']);
    await d.docker(['network', 'rm', 'kn']);
    await eventually(async () => {
      expect(await ownLinks(env)).toEqual([]);
      expect(await macvlanChildren(w.parent)).toEqual([]);
    });
    await eventually(() => expect(storeRows(env)).toEqual({}));
    expect(await routes()).toEqual(routesBefore);
    const parentAfter = (await allLinkDetails()).find((l) => l.ifname === w.parent);
    expect(parentAfter).toMatchObject({ ifindex: parentBefore?.ifindex, address: parentBefore?.address, flags: parentBefore?.flags });
    expect((await addrsOn(w.parent)).map((a) => a.local)).toContain('172.25.0.3');
    // Docker's macvlan network and container are untouched by tsnet's crash, reconcile and removal.
    expect(await wd.reaches('172.25.1.10')).toBe(true);
    expect((await containerLink(env, 'k0'))?.link_index).toBe(await ifindexOf(wd.parent));
  }, 120_000);

  test('dockerd restarted: a --restart always container comes back on its macvlan network (tsnet needs no Docker API at boot)', async () => {
    const d = env.docker;
    const w = await wire({ lanAddrs: ['172.27.1.2/24'] });
    await d.docker([...createArgs(env.name, w.parent, '172.27.1'), 'boot']);
    await runDetached(env, 'always', ['--restart', 'always', '--stop-timeout', '1', '--network', 'boot', '--ip', '172.27.1.10']);
    const rows = storeRows(env);
    await env.dockerd.stop();
    await eventually(async () => expect(await macvlanChildren(w.parent)).toEqual([]));
    await env.dockerd.start();
    await eventually(async () => expect(await d.docker(['inspect', '-f', '{{.State.Running}}', 'always'])).toBe('true'), 30_000, 200);
    expect(await containerIp(env, 'always', 'boot')).toBe('172.27.1.10');
    expect((await containerLink(env, 'always'))?.link_index).toBe(await ifindexOf(w.parent));
    await eventually(async () => expect(await w.reaches('172.27.1.10')).toBe(true));
    expect(storeRows(env)).toEqual(rows);
    expect(await macvlanChildren(w.parent)).toEqual([]);
  }, 120_000);

  test('a parent deleted behind tsnet\'s back (containers and shim up): tsnet restarts, and rm still removes all it made', async () => {
    const d = env.docker;
    const w = await wire({ lanAddrs: ['172.27.2.2/24'], hostAddrs: ['172.27.2.3/24'] });
    await d.docker([...createArgs(env.name, w.parent, '172.27.2', ['-o', 'tsnet.host_shim=true', '--aux-address', 'host_shim=172.27.2.250']), 'gone']);
    await runDetached(env, 'g1', ['--network', 'gone', '--ip', '172.27.2.10']);
    expect(await ownLinks(env)).toHaveLength(1);
    // The NIC goes (unplugged, renamed, a VM's NIC removed): its children, the shim and the container's eth0, go with it.
    await runOk('ip', ['link', 'del', w.parent]);
    expect(await ownLinks(env)).toEqual([]);
    await env.tsnet.restart();
    expect(await ownLinks(env)).toEqual([]);
    await d.docker(['rm', '-f', 'g1']);
    await d.docker(['network', 'rm', 'gone']);
    await eventually(() => expect(storeRows(env)).toEqual({}));
    expect(await ownLinks(env)).toEqual([]);
    expect(await routesTo('172.27.2.10')).toEqual([]);
  }, 120_000);

  test('dual stack: IPv6 addresses on the wire, containers and the LAN reach each other over IPv6, the shim has a /128 and routes /128s', async () => {
    const d = env.docker;
    const v6 = 'fd00:7473:27::';
    const w = await wire({ lanAddrs: ['172.27.3.2/24', `${v6}2/64`], hostAddrs: ['172.27.3.3/24', `${v6}3/64`] });
    await d.docker([
      ...createArgs(env.name, w.parent, '172.27.3', ['--ip-range', '172.27.3.64/26', '-o', 'tsnet.host_shim=true']),
      '--ipv6', '--subnet', `${v6}/64`, '--gateway', `${v6}1`, '--ip-range', `${v6}100/120`, 'dual',
    ]);
    await runDetached(env, 'd1', ['--network', 'dual']);
    await runDetached(env, 'd2', ['--network', 'dual']);
    const v6of = (c: string): Promise<string> => d.docker(['inspect', '-f', '{{.NetworkSettings.Networks.dual.GlobalIPv6Address}}', c]);
    const [a1, a2] = [await v6of('d1'), await v6of('d2')];
    expect(a1).toMatch(/^fd00:7473:27::1[0-9a-f]{2}$/);
    const shim = (await ownChildren(env, w.parent)).at(0) ?? '';
    const shimV6 = (await addrsOn(shim)).filter((a) => a.family === 'inet6' && a.scope === 'global');
    expect(shimV6.map((a) => a.prefixlen)).toEqual([128]);
    expect(shimV6[0]?.local).toMatch(/^fd00:7473:27::1[0-9a-f]{2}$/);
    expect([a1, a2]).not.toContain(shimV6[0]?.local);
    // Containers' addresses may still be tentative (duplicate address detection) right after the start.
    await eventually(async () => expect(await d.dockerTry(['exec', 'd1', 'ping', '-6', '-c', '1', '-W', '1', a2])).toMatchObject({ code: 0 }), 10_000, 200);
    await eventually(async () => expect(await w.reaches(a1)).toBe(true), 10_000, 200);
    expect(await routeDev(a1)).toBe(shim);
    expect(await routeDev(`${v6}2`)).toBe(w.parent);
    await eventually(async () => expect((await pingFrom(undefined, a2)).received).toBe(1), 10_000, 200);
    expect(await d.docker(['exec', 'd1', 'ip', '-6', 'route'])).toMatch(new RegExp(`default via ${v6}1 dev eth0`));
    await d.docker(['rm', '-f', 'd1', 'd2']);
    await eventually(async () => expect(await routesTo(a1)).toEqual([]));
    await d.docker(['network', 'rm', 'dual']);
    await eventually(async () => expect(await ownLinks(env)).toEqual([]));
    await eventually(() => expect(storeRows(env)).toEqual({}));
  }, 120_000);

  test('refusals that need the real host reach the CLI with tsnet\'s Err and change nothing', async () => {
    const d = env.docker;
    const w = await wire({ lanAddrs: ['172.26.0.2/24'] });
    const wp = await wire();
    const wb = await wire();
    const tag = wireTag();
    const bridge = `${tag}b`;
    await runOk('ip', ['link', 'add', bridge, 'type', 'bridge']);
    extraCleanup.push(async () => {
      await run('ip', ['link', 'del', bridge]);
    });
    await runOk('ip', ['link', 'set', wb.parent, 'master', bridge]);
    await d.docker([...createArgs(env.name, w.parent, '172.26.0'), 'inuse']);
    await d.docker([...createArgs(env.name, wp.parent, '172.26.1', ['-o', 'macvlan_mode=passthru']), 'pt']);
    await d.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '--subnet', '172.26.9.0/24', 'tsbridge']);
    const tsBridge = `tsbr-${(await d.docker(['network', 'inspect', 'tsbridge', '-f', '{{.Id}}'])).slice(0, 10)}`;
    const before = { own: await ownLinks(env), store: storeRows(env), links: (await allLinkDetails()).map((l) => l.ifname).sort() };

    const refused = async (name: string, args: string[], message: RegExp): Promise<void> => {
      const r = await d.dockerTry([...args, name]);
      expect({ code: r.code === 0 ? 0 : 1, stderr: r.stderr }).toEqual({ code: 1, stderr: expect.stringMatching(message) as unknown });
      expect((await d.dockerTry(['network', 'inspect', name])).code).not.toBe(0);
    };
    // tsnet's Err as the CLI prints it: `option parent="IF" (mode=macvlan): why`.
    const err = (parent: string, why: string): RegExp => new RegExp(`NetworkDriver\\.CreateNetwork: option parent="${parent}" \\(mode=macvlan\\): ${why}`);
    const missing = `${tag}x`;
    await refused('r-missing', createArgs(env.name, missing, '172.26.2'), err(missing, 'no such link'));
    await refused('r-port', createArgs(env.name, wb.parent, '172.26.3'), err(wb.parent, `the link is a port of bridge ${bridge}`));
    await refused('r-tsbr', createArgs(env.name, tsBridge, '172.26.4'), err(tsBridge, 'the link belongs to another tsnet network'));
    await refused('r-passthru', createArgs(env.name, w.parent, '172.26.5', ['-o', 'macvlan_mode=passthru']), err(w.parent, 'macvlan_mode=passthru needs the parent alone, and network [0-9a-f]{12} uses it'));
    await refused('r-besidept', createArgs(env.name, wp.parent, '172.26.6'), err(wp.parent, 'macvlan_mode=passthru network [0-9a-f]{12} holds it alone'));
    // Overlap on one parent: Docker's IPAM for the second, so only tsnet's driver can see the two subnets meet.
    await refused(
      'r-overlap',
      ['network', 'create', '-d', env.name, '-o', 'mode=macvlan', '-o', `parent=${w.parent}`, '--subnet', '172.26.0.128/25'],
      err(w.parent, 'subnet 172\\.26\\.0\\.128/25 overlaps subnet 172\\.26\\.0\\.0/24 of network [0-9a-f]{12} on the same parent'),
    );
    expect({ own: await ownLinks(env), store: storeRows(env), links: (await allLinkDetails()).map((l) => l.ifname).sort() }).toEqual(before);
    expect((await allLinkDetails()).find((l) => l.ifname === wb.parent)?.master).toBe(bridge);
    // The same subnet on another parent is no overlap (another LAN), through the same IPAM as the refused one.
    const wo = await wire();
    await d.docker(['network', 'create', '-d', env.name, '-o', 'mode=macvlan', '-o', `parent=${wo.parent}`, '--subnet', '172.26.0.128/25', 'r-other']);
  }, 120_000);
});
