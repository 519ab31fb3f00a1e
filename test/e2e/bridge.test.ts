import { BUSYBOX_IMAGE } from '../harness/busybox';
import { containerIp as ip, ownLinks, ping, runDetached, storeRows } from '../harness/containers';
import { eventually, run, runOk } from '../harness/exec';
import { addrsOn, describeE2E, links, nftTableExists } from '../harness/host';
import { setupE2E } from '../harness/tsnet';

/**
 * Bridge networks through the docker CLI against a private dockerd, dockerd's default firewall (iptables=true,
 * br_netfilter, FORWARD policy DROP): what an operator does, checked in the kernel and in tsnet's store.
 */
jest.setTimeout(120_000);

describeE2E('bridge networks under dockerd --iptables=true', () => {
  const env = setupE2E({ dockerd: { iptables: true } });
  let forwardPolicy = 'ACCEPT';

  beforeAll(async () => {
    // dockerd sets FORWARD to DROP only when it enables forwarding itself; force it so the test does not depend on
    // what this host had before, and put it back afterwards.
    const rules = (await runOk('iptables', ['-w', '-S', 'FORWARD'])).stdout;
    forwardPolicy = /-P FORWARD (\w+)/.exec(rules)?.[1] ?? 'ACCEPT';
    await runOk('iptables', ['-w', '-P', 'FORWARD', 'DROP']);
  });
  afterAll(async () => {
    await runOk('iptables', ['-w', '-P', 'FORWARD', forwardPolicy]);
  });
  afterEach(async () => {
    // A failed test must not leave networks that overlap the next test's subnets.
    await env.docker.removeAllContainers();
    await env.docker.removeCustomNetworks();
  });

  test('the operator flow: create, inspect, ping by IP and name, --ip honoured, rm leaves nothing', async () => {
    const d = env.docker;
    const before = await ownLinks(env);
    await d.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '--subnet', '172.28.0.0/16', '--ip-range', '172.28.5.0/24', '--gateway', '172.28.5.254', '--aux-address', 'r=172.28.5.1', 'net1']);
    const ipam = JSON.parse(await d.docker(['network', 'inspect', 'net1', '-f', '{{json .IPAM.Config}}'])) as unknown;
    expect(ipam).toEqual([{ Subnet: '172.28.0.0/16', IPRange: '172.28.5.0/24', Gateway: '172.28.5.254', AuxiliaryAddresses: { r: '172.28.5.1' } }]);
    const netId = await d.docker(['network', 'inspect', 'net1', '-f', '{{.Id}}']);
    const bridge = `tsbr-${netId.slice(0, 10)}`;
    expect((await addrsOn(bridge)).map((a) => `${a.local}/${a.prefixlen}`)).toContain('172.28.5.254/16');

    // br_netfilter on + FORWARD DROP: the traffic below crosses dockerd's FORWARD chain.
    expect((await runOk('cat', ['/proc/sys/net/bridge/bridge-nf-call-iptables'])).stdout.trim()).toBe('1');
    expect((await runOk('iptables', ['-w', '-S', 'DOCKER-USER'])).stdout).toContain(`--comment ${env.name} -j ACCEPT`);

    await runDetached(env, 'ca', ['--network', 'net1']);
    await runDetached(env, 'cb', ['--network', 'net1', '--ip', '172.28.5.10']);
    expect(await ip(env, 'cb', 'net1')).toBe('172.28.5.10');
    const ipA = await ip(env, 'ca', 'net1');
    expect(ipA).toMatch(/^172\.28\.5\.\d+$/);
    expect(['172.28.5.1', '172.28.5.254', '172.28.5.10']).not.toContain(ipA);
    expect(await ping(env, 'ca', '172.28.5.10')).toBe(true);
    expect(await ping(env, 'cb', 'ca')).toBe(true); // by name, through Docker's embedded DNS
    expect(await ping(env, 'ca', '172.28.5.254')).toBe(true); // the gateway on the bridge
    // dockerd deletes and re-inserts its FORWARD → DOCKER-USER jump at every network create: without the jump (held
    // off here) tsnet's twin rule in FORWARD still accepts; without both, dockerd's DROP policy cuts them apart.
    const mark = `0x${env.tsnet.fwMark.toString(16)}`;
    const twin = ['FORWARD', '-m', 'mark', '--mark', `${mark}/${mark}`, '-m', 'comment', '--comment', env.name, '-j', 'ACCEPT'];
    expect((await runOk('iptables', ['-w', '-S', 'FORWARD'])).stdout).toContain(`--comment ${env.name} -j ACCEPT`);
    // tsnet frozen: its drift repair would put a deleted rule back within milliseconds.
    await env.tsnet.frozen(async () => {
      // Every jump: one left by an earlier dockerd on this host (dockerd never removes its own) would still lead there.
      let jumps = 0;
      while ((await run('iptables', ['-w', '-D', 'FORWARD', '-j', 'DOCKER-USER'])).code === 0) jumps++;
      expect(jumps).toBeGreaterThan(0);
      try {
        expect(await ping(env, 'ca', '172.28.5.10')).toBe(true);
        await runOk('iptables', ['-w', '-D', ...twin]);
        try {
          expect(await ping(env, 'ca', '172.28.5.10')).toBe(false);
        } finally {
          await runOk('iptables', ['-w', '-A', ...twin]);
        }
      } finally {
        for (let i = 0; i < jumps; i++) await runOk('iptables', ['-w', '-I', 'FORWARD', '-j', 'DOCKER-USER']);
      }
    });
    expect(await ping(env, 'ca', '172.28.5.10')).toBe(true);
    // Inside, the interface is eth0 with the MAC tsnet generated and the gateway as default route.
    const route = await d.docker(['exec', 'ca', 'ip', 'route']);
    expect(route).toMatch(/default via 172\.28\.5\.254 dev eth0/);
    expect(storeRows(env)).toMatchObject({ network: 1, endpoint: 2, pool: 1 });

    await d.docker(['rm', '-f', 'ca', 'cb']);
    await d.docker(['network', 'rm', 'net1']);
    await eventually(() => expect(storeRows(env)).toEqual({}));
    // Links, the nft table and the hook go in the background, right after the answer.
    await eventually(async () => {
      expect(await ownLinks(env)).toEqual(before);
      expect(await nftTableExists('inet', env.name)).toBe(false);
      expect((await runOk('iptables', ['-w', '-S', 'DOCKER-USER'])).stdout).not.toContain(env.name);
      expect((await runOk('iptables', ['-w', '-S', 'FORWARD'])).stdout).not.toContain(env.name);
    });
  });

  test('a second network is isolated at L2; connect/disconnect of a running container', async () => {
    const d = env.docker;
    await d.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '--subnet', '172.28.0.0/16', 'n1']);
    await d.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '--subnet', '172.29.0.0/16', 'n2']);
    await runDetached(env, 'cx', ['--network', 'n1']);
    await runDetached(env, 'cy', ['--network', 'n2']);
    const ipX = await ip(env, 'cx', 'n1');
    // ARP for x's address from n2's segment: no answer, because it is another broadcast domain.
    const arp = await d.dockerTry(['exec', 'cy', 'arping', '-c', '2', '-w', '3', '-I', 'eth0', ipX]);
    expect(arp.code).not.toBe(0);
    expect(await ping(env, 'cy', ipX)).toBe(false);

    await d.docker(['network', 'connect', 'n2', 'cx']);
    const ipXn2 = await ip(env, 'cx', 'n2');
    expect(ipXn2).toMatch(/^172\.29\./);
    expect(await d.docker(['exec', 'cx', 'ip', '-o', 'addr', 'show', 'eth1'])).toContain(ipXn2);
    expect(await ping(env, 'cy', ipXn2)).toBe(true);
    expect(await ping(env, 'cx', 'cy')).toBe(true);
    const hostLinks = (await ownLinks(env, 'tsv')).length;

    await d.docker(['network', 'disconnect', 'n2', 'cx']);
    expect((await d.dockerTry(['exec', 'cx', 'ip', 'link', 'show', 'eth1'])).code).not.toBe(0);
    await eventually(async () => expect((await ownLinks(env, 'tsv')).length).toBe(hostLinks - 1));
    expect(await ping(env, 'cy', ipXn2)).toBe(false);
    await d.docker(['rm', '-f', 'cx', 'cy']);
    await d.docker(['network', 'rm', 'n1', 'n2']);
    await eventually(async () => expect(await ownLinks(env)).toEqual([]));
  });

  test('IPv6, several subnets, MTU and MAC options reach the kernel', async () => {
    const d = env.docker;
    await d.docker([
      'network', 'create', '-d', env.name, '--ipam-driver', env.name, '--ipv6',
      '--subnet', '172.30.1.0/24', '--gateway', '172.30.1.1',
      '--subnet', '172.30.2.0/24', '--gateway', '172.30.2.1',
      '--subnet', 'fd00:7473:1::/64', '--gateway', 'fd00:7473:1::1',
      '-o', 'com.docker.network.driver.mtu=1400', '-o', 'com.docker.network.bridge.name=tsbr-e2e6', 'v6net',
    ]);
    const br = (await links()).find((l) => l.ifname === 'tsbr-e2e6');
    expect(br?.mtu).toBe(1400);
    const addrs = (await addrsOn('tsbr-e2e6')).map((a) => `${a.local}/${a.prefixlen}`);
    expect(addrs).toEqual(expect.arrayContaining(['172.30.1.1/24', '172.30.2.1/24', 'fd00:7473:1::1/64']));
    await runDetached(env, 'cp', ['--network', 'v6net', '--mac-address', '02:42:ac:1e:01:63']);
    await runDetached(env, 'cq', ['--network', 'v6net', '--ip', '172.30.2.50']);
    expect(await d.docker(['exec', 'cp', 'cat', '/sys/class/net/eth0/address'])).toBe('02:42:ac:1e:01:63');
    expect(await d.docker(['exec', 'cp', 'cat', '/sys/class/net/eth0/mtu'])).toBe('1400');
    const v6q = await d.docker(['inspect', '-f', '{{.NetworkSettings.Networks.v6net.GlobalIPv6Address}}', 'cq']);
    expect(v6q).toMatch(/^fd00:7473:1::/);
    expect(await ping(env, 'cp', v6q, true)).toBe(true);
    expect(await ping(env, 'cp', '172.30.2.50')).toBe(true);
    expect(await d.docker(['exec', 'cq', 'ip', 'route'])).toMatch(/default via 172\.30\.2\.1/);
    expect(await d.docker(['exec', 'cq', 'ip', '-6', 'route'])).toMatch(/default via fd00:7473:1::1/);
    await d.docker(['rm', '-f', 'cp', 'cq']);
    await d.docker(['network', 'rm', 'v6net']);
    await eventually(async () => expect((await links()).some((l) => l.ifname === 'tsbr-e2e6')).toBe(false));
  });

  test('a default pool is chosen without --subnet; tsnet works with Docker IPAM and vice versa', async () => {
    const d = env.docker;
    await d.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, 'auto']);
    const subnet = await d.docker(['network', 'inspect', 'auto', '-f', '{{(index .IPAM.Config 0).Subnet}}']);
    expect(subnet).toMatch(/^(172\.(1[7-9]|2\d|3[01])\.0\.0\/16|192\.168\.\d+\.0\/20)$/);
    // tsnet's driver with Docker's default IPAM
    await d.docker(['network', 'create', '-d', env.name, '--subnet', '10.201.0.0/24', 'dockeripam']);
    // Docker's bridge driver with tsnet's IPAM
    await d.docker(['network', 'create', '-d', 'bridge', '--ipam-driver', env.name, '--subnet', '10.202.0.0/24', 'tsipam']);
    await runDetached(env, 'cm', ['--network', 'dockeripam']);
    await runDetached(env, 'cn', ['--network', 'tsipam']);
    expect(await ip(env, 'cm', 'dockeripam')).toMatch(/^10\.201\.0\.\d+$/);
    expect(await ip(env, 'cn', 'tsipam')).toMatch(/^10\.202\.0\.\d+$/);
    await d.docker(['network', 'connect', 'dockeripam', 'cn']);
    expect(await ping(env, 'cn', 'cm')).toBe(true);
    await d.docker(['rm', '-f', 'cm', 'cn']);
    await d.docker(['network', 'rm', 'auto', 'dockeripam', 'tsipam']);
    await eventually(() => expect(storeRows(env)).toEqual({}));
  });

  test('overlapping subnets and bad options are refused with the message reaching the CLI', async () => {
    const d = env.docker;
    await d.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '--subnet', '172.28.0.0/16', 'ov1']);
    const overlap = await d.dockerTry(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '--subnet', '172.28.128.0/17', 'ov2']);
    expect(overlap.code).not.toBe(0);
    expect(overlap.stderr).toMatch(/172\.28\.128\.0\/17/);
    const bad = await d.dockerTry(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '--subnet', '172.31.0.0/16', '-o', 'color=blue', 'badopt']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/unknown option "color"/);
    expect((await d.dockerTry(['network', 'inspect', 'badopt'])).code).not.toBe(0);
    await d.docker(['network', 'rm', 'ov1']);
    await eventually(() => expect(storeRows(env)).toEqual({}));
  });

  test('tsnet restarted (gracefully and by kill -9) between container start and stop loses nothing', async () => {
    const d = env.docker;
    await d.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '--subnet', '172.28.0.0/16', '--ip-range', '172.28.9.0/29', 'rs']);
    await runDetached(env, 'r1', ['--network', 'rs']);
    await runDetached(env, 'r2', ['--network', 'rs']);
    const ips = [await ip(env, 'r1', 'rs'), await ip(env, 'r2', 'rs')];
    const rows = storeRows(env);

    await env.tsnet.restart();
    expect(storeRows(env)).toEqual(rows);
    expect(await ping(env, 'r1', 'r2')).toBe(true);

    await env.tsnet.kill9();
    await env.tsnet.start();
    expect(storeRows(env)).toEqual(rows);
    expect(await ping(env, 'r2', ips[0])).toBe(true);
    // The allocator remembers: a new container never gets an address in use.
    await runDetached(env, 'r3', ['--network', 'rs']);
    expect(ips).not.toContain(await ip(env, 'r3', 'rs'));
    await d.docker(['stop', '-t', '1', 'r1', 'r2', 'r3']);
    await d.docker(['rm', 'r1', 'r2', 'r3']);
    await d.docker(['network', 'rm', 'rs']);
    await eventually(async () => expect(await ownLinks(env)).toEqual([]));
    await eventually(() => expect(storeRows(env)).toEqual({}));
  });

  test('dockerd restarted with a restart-policy container: it comes back on the same network, no deadlock', async () => {
    const d = env.docker;
    await d.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '--subnet', '172.28.0.0/16', 'boot']);
    await d.docker(['run', '-d', '--name', 'always', '--restart', 'always', '--network', 'boot', BUSYBOX_IMAGE, 'sleep', '3600']);
    await runDetached(env, 'peer', ['--network', 'boot']);
    // dockerd re-attaches 'always' during its own start, before its API answers: tsnet must not need that API.
    await env.dockerd.stop();
    await env.dockerd.start();
    await eventually(async () => expect(await d.docker(['inspect', '-f', '{{.State.Running}}', 'always'])).toBe('true'), 30_000, 200);
    await d.docker(['start', 'peer']);
    expect(await ping(env, 'peer', 'always')).toBe(true);
    await d.docker(['rm', '-f', 'always', 'peer']);
    await d.docker(['network', 'rm', 'boot']);
    await eventually(async () => expect(await ownLinks(env)).toEqual([]));
    await eventually(() => expect(storeRows(env)).toEqual({}));
  });

  test('a bridge deleted behind tsnet\'s back comes back on restart', async () => {
    const d = env.docker;
    await d.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '--subnet', '172.28.0.0/16', '-o', 'com.docker.network.bridge.name=tsbr-lost', 'lost']);
    await runOk('ip', ['link', 'del', 'tsbr-lost']);
    await env.tsnet.restart();
    expect((await addrsOn('tsbr-lost')).map((a) => a.local)).toContain('172.28.0.1');
    await runDetached(env, 'l1', ['--network', 'lost']);
    await runDetached(env, 'l2', ['--network', 'lost']);
    expect(await ping(env, 'l1', 'l2')).toBe(true);
    await d.docker(['rm', '-f', 'l1', 'l2']);
    await d.docker(['network', 'rm', 'lost']);
    await eventually(async () => expect((await run('ip', ['link', 'show', 'tsbr-lost'])).code).not.toBe(0));
  });
});

describeE2E('bridge networks under dockerd --iptables=false', () => {
  const env = setupE2E({ dockerd: { iptables: false } });

  test('containers on one network reach each other; no DOCKER-USER hook is needed', async () => {
    const d = env.docker;
    await d.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '--subnet', '172.28.0.0/16', 'plain']);
    await runDetached(env, 'ca', ['--network', 'plain']);
    await runDetached(env, 'cb', ['--network', 'plain']);
    expect(await ping(env, 'ca', 'cb')).toBe(true);
    await d.docker(['rm', '-f', 'ca', 'cb']);
    await d.docker(['network', 'rm', 'plain']);
    await eventually(async () => expect(await ownLinks(env)).toEqual([]));
  });
});
