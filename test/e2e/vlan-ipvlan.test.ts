import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { arping, catIn, cleanAfterEach, linkDetails, networkId, ownLinks, ping, runDetached, storeRows, vethPair } from '../harness/containers';
import { eventually, fileTail, patient, run, type RunResult, runOk, spawnDaemon, terminate, waitFor } from '../harness/exec';
import { describeKernel } from '../harness/kernel';
import { type E2EEnv, setupE2E } from '../harness/tsnet';
import { useTrunk } from '../harness/trunk';

/**
 * macvlan on 802.1Q subinterfaces (`-o parent=<trunk>.100`), ipvlan l2 and l3, and networks without a parent (on a
 * dummy link tsnet owns), through the docker CLI against a private dockerd. Two hosts on one trunk: this host (end
 * A of a veth, the parent) and host B (a namespace at end B with an untagged address, VLAN 100, 110 and 200
 * subinterfaces and a macvlan "container" on VLAN 100). Needs 802.1Q, ipvlan and dummy links in the kernel; `make
 * test` runs it in a VM otherwise (one dockerd for all: each costs minutes there).
 */
jest.setTimeout(patient(180_000));

describeKernel(['vlan', 'ipvlan', 'dummy'], 'VLAN, ipvlan and dummy parents', () => {
  const env = setupE2E({ dockerd: { iptables: true } });
  const hostB = {
    untagged: '10.50.0.2',
    v100: '10.100.0.2',
    v110: '10.110.0.2',
    v110high: '10.110.0.250',
    v200: '10.200.0.2',
    container100: '10.100.0.3',
  };
  const trunk = useTrunk(async (t) => {
    await t.exec('ip', ['addr', 'add', `${hostB.untagged}/24`, 'dev', t.b]);
    const v100 = await t.vlan(100, `${hostB.v100}/24`);
    const v110 = await t.vlan(110, `${hostB.v110}/24`);
    // One address in each /25 half of VLAN 110 (the sharing test's two networks).
    await t.exec('ip', ['addr', 'add', `${hostB.v110high}/24`, 'dev', v110]);
    await t.vlan(200, `${hostB.v200}/24`);
    // A container of host B's on VLAN 100 (a macvlan child there, as its own tsnet or Docker would make).
    await t.macvlan(v100, `${hostB.container100}/24`);
  });
  cleanAfterEach(env);

  /** `docker network create -d <tsnet>` with tsnet's IPAM (unless `ipam` is docker) and `-o` options: its outcome. */
  function tryCreate(name: string, options: string[], args: string[], ipam: 'tsnet' | 'docker' = 'tsnet'): Promise<RunResult> {
    const ipamArgs = ipam === 'tsnet' ? ['--ipam-driver', env.name] : [];
    return env.docker.dockerTry(['network', 'create', '-d', env.name, ...ipamArgs, ...options.flatMap((o) => ['-o', o]), ...args, name]);
  }

  /** {@link tryCreate} that must succeed; the network id. */
  async function create(name: string, options: string[], args: string[]): Promise<string> {
    const r = await tryCreate(name, options, args);
    if (r.code !== 0) throw new Error(`docker network create ${name} failed: ${r.stderr}`);
    return r.stdout.trim();
  }

  /**
   * 3 s of iperf3 from the container (the host's iperf3 in its network namespace: busybox has none) to a one-shot
   * server in namespace `ns` bound to `server`; what the server received.
   */
  async function iperf3(e: E2EEnv, container: string, ns: string, server: string): Promise<{ bytes: number; bitsPerSecond: number }> {
    const logFile = path.join(e.dockerd.dir, 'iperf3-server.log');
    const daemon = spawnDaemon('ip', ['netns', 'exec', ns, 'iperf3', '-s', '-1', '-B', server], { logFile });
    try {
      // iperf3 buffers its "listening" line when not on a terminal: the socket tells instead.
      const listening = async (): Promise<boolean> =>
        (await run('ip', ['netns', 'exec', ns, 'ss', '-ltnH', 'sport = :5201'])).stdout.includes(':5201');
      await waitFor(listening, patient(10_000), () => `iperf3 server not listening: ${fileTail(logFile)}`);
      const pid = await e.docker.docker(['inspect', '-f', '{{.State.Pid}}', container]);
      const out = await runOk('nsenter', ['-t', pid, '-n', 'iperf3', '-c', server, '-t', '3', '-J'], { timeoutMs: patient(30_000) });
      const sum = (JSON.parse(out.stdout) as { end: { sum_received: { bytes: number; bits_per_second: number } } }).end.sum_received;
      return { bytes: sum.bytes, bitsPerSecond: sum.bits_per_second };
    } finally {
      await terminate(daemon, 2_000);
    }
  }

  /** A tsnet macvlan network on `parent`. */
  function macvlanNet(name: string, parent: string, args: string[]): Promise<string> {
    return create(name, ['mode=macvlan', `parent=${parent}`], args);
  }

  describe('macvlan on 802.1Q subinterfaces', () => {
    test('the subinterface is made (up, VLAN id 100, tsnet owner tag); VLAN 100 reaches host B on VLAN 100 only, tagged on the wire', async () => {
      const d = env.docker;
      const v100 = `${trunk().a}.100`;
      await macvlanNet('n100', v100, ['--subnet', '10.100.0.0/24', '--gateway', '10.100.0.1']);
      const link = await linkDetails(v100);
      expect(link).toMatchObject({
        link: trunk().a,
        ifalias: `tsnet:${env.name}`,
        linkinfo: { info_kind: 'vlan', info_data: { protocol: '802.1Q', id: 100 } },
      });
      expect(link?.flags).toContain('UP');
      await macvlanNet('n200', `${trunk().a}.200`, ['--subnet', '10.200.0.0/24']);
      expect(storeRows(env)).toMatchObject({ network: 2, parent: 2 });

      await runDetached(env, 'c100', ['--network', 'n100', '--ip', '10.100.0.10']);
      await runDetached(env, 'c200', ['--network', 'n200', '--ip', '10.200.0.10']);
      expect(await ping(env, 'c100', hostB.v100)).toBe(true);
      expect(await ping(env, 'c100', hostB.container100)).toBe(true);
      expect(await ping(env, 'c200', hostB.v200)).toBe(true);
      expect(await trunk().ping('10.100.0.10')).toBe(true);
      // Host B answers ARP only on the interface holding the address: over VLAN 100, its VLAN 200 address is not there.
      expect(await arping(env, 'c100', hostB.v100)).toBe(true);
      expect(await arping(env, 'c100', hostB.v200)).toBe(false);
      expect(await arping(env, 'c200', hostB.v100)).toBe(false);

      // On the trunk the frames carry the tag and the container's own MAC (Docker's 02:42 + its IPv4).
      const mac = await d.docker(['exec', 'c100', 'cat', '/sys/class/net/eth0/address']);
      expect(mac).toBe('02:42:0a:64:00:0a');
      const sniffer = await trunk().sniff(`vlan 100 and icmp and ether src ${mac}`);
      expect(await ping(env, 'c100', hostB.v100)).toBe(true);
      await eventually(() => expect(sniffer.frames().length).toBeGreaterThan(0), patient(5_000));
      const frames = await sniffer.stop();
      expect(frames[0]).toMatch(new RegExp(`^\\S+ ${mac} > \\S+, ethertype 802\\.1Q \\(0x8100\\), length \\d+: vlan 100,`));
      // A functional iperf3 run over the VLAN (the VM's CPU is emulated: the rate is printed, not judged).
      const received = await iperf3(env, 'c100', trunk().ns, hostB.v100);
      expect(received.bytes).toBeGreaterThan(0);
      console.log(`iperf3 c100 -> host B over VLAN 100: ${(received.bitsPerSecond / 1e6).toFixed(0)} Mbit/s (functional check only)`);
    });

    test('a subinterface tsnet deleted with its last network is made again for the next network of that name', async () => {
      // The first test made and deleted VLAN 100 after containers joined on it; the same name comes back here.
      const v100 = `${trunk().a}.100`;
      await macvlanNet('again', v100, ['--subnet', '10.100.0.0/24']);
      const link = await linkDetails(v100);
      expect(link).toMatchObject({ ifalias: `tsnet:${env.name}`, linkinfo: { info_data: { id: 100 } } });
      expect(link?.flags).toContain('UP');
      await runDetached(env, 'a1', ['--network', 'again', '--ip', '10.100.0.40']);
      expect(await ping(env, 'a1', hostB.v100)).toBe(true);
    });

    test('networks on one subinterface share it, and it goes with the last of them; an existing subinterface is never deleted', async () => {
      // VLAN 110: no earlier test made (and deleted) a link of that name (see the next test).
      const v110 = `${trunk().a}.110`;
      await macvlanNet('low', v110, ['--subnet', '10.110.0.0/25']);
      await macvlanNet('high', v110, ['--subnet', '10.110.0.128/25']);
      expect(await ownLinks(env)).toEqual([v110]);
      await runDetached(env, 'lo1', ['--network', 'low', '--ip', '10.110.0.20']);
      await runDetached(env, 'hi1', ['--network', 'high', '--ip', '10.110.0.130']);
      expect(await ping(env, 'lo1', hostB.v110)).toBe(true);
      expect(await ping(env, 'hi1', hostB.v110high)).toBe(true);
      // Same VLAN, same wire: the two networks' containers meet there (macvlan bridge mode, one parent).
      expect(await arping(env, 'lo1', '10.110.0.130')).toBe(true);

      // The network that made the link goes first: the link is the link's, not that network's.
      await env.docker.docker(['rm', '-f', 'lo1']);
      await env.docker.docker(['network', 'rm', 'low']);
      expect((await linkDetails(v110))?.flags).toContain('UP');
      expect(await ping(env, 'hi1', hostB.v110high)).toBe(true);
      await env.docker.docker(['rm', '-f', 'hi1']);
      await env.docker.docker(['network', 'rm', 'high']);
      await eventually(async () => expect(await linkDetails(v110)).toBeUndefined());

      // A subinterface the operator made is used as it is and left behind.
      const v300 = `${trunk().a}.300`;
      await runOk('ip', ['link', 'add', 'link', trunk().a, 'name', v300, 'type', 'vlan', 'id', '300']);
      await runOk('ip', ['link', 'set', v300, 'up']);
      try {
        await macvlanNet('mine', v300, ['--subnet', '10.30.0.0/24']);
        await runDetached(env, 'm1', ['--network', 'mine']);
        await env.docker.docker(['rm', '-f', 'm1']);
        await env.docker.docker(['network', 'rm', 'mine']);
        await eventually(() => expect(storeRows(env)).toEqual({}));
        const kept = await linkDetails(v300);
        expect(kept).toMatchObject({ linkinfo: { info_data: { id: 300 } } });
        expect(kept?.ifalias).toBeUndefined();
        expect(kept?.flags).toContain('UP');
      } finally {
        await run('ip', ['link', 'del', v300]);
      }
      expect(await ownLinks(env)).toEqual([]);
    });

    test('refusals that need the host: overlapping subnets on one VLAN, a down parent, a VLAN without its lower NIC; nothing changes', async () => {
      const d = env.docker;
      const v100 = `${trunk().a}.100`;
      await macvlanNet('first', v100, ['--subnet', '10.100.0.0/24']);
      const before = { links: await ownLinks(env), rows: storeRows(env) };
      // Docker's own IPAM knows nothing of tsnet's pools, so the overlap reaches tsnet's parent check.
      const overlap = await tryCreate('second', ['mode=macvlan', `parent=${v100}`], ['--subnet', '10.100.0.128/25'], 'docker');
      expect(overlap.code).not.toBe(0);
      expect(overlap.stderr).toContain(`option parent="${v100}" (mode=macvlan): subnet 10.100.0.128/25 overlaps subnet 10.100.0.0/24`);

      const tag = randomBytes(2).toString('hex');
      const down = `tkd${tag}a`;
      const pair = await vethPair(down, `tkd${tag}b`);
      try {
        const refused = await tryCreate('ondown', ['mode=macvlan', `parent=${down}`], ['--subnet', '10.41.0.0/24']);
        expect(refused.code).not.toBe(0);
        expect(refused.stderr).toContain(`option parent="${down}" (mode=macvlan): the link is down`);
        expect((await linkDetails(down))?.flags).not.toContain('UP');
        // An existing subinterface that is down is the operator's too: refused, not brought up.
        await runOk('ip', ['link', 'add', 'link', down, 'name', `${down}.7`, 'type', 'vlan', 'id', '7']);
        const vlanDown = await tryCreate('onvlandown', ['mode=macvlan', `parent=${down}.7`], ['--subnet', '10.42.0.0/24']);
        expect(vlanDown.stderr).toContain(`option parent="${down}.7" (mode=macvlan): the link is down`);
        expect((await linkDetails(`${down}.7`))?.flags).not.toContain('UP');
      } finally {
        await pair.del();
      }
      const orphan = `tkn${tag}.100`;
      const noLower = await tryCreate('nolower', ['mode=macvlan', `parent=${orphan}`], ['--subnet', '10.43.0.0/24']);
      expect(noLower.code).not.toBe(0);
      expect(noLower.stderr).toContain(`option parent="${orphan}" (mode=macvlan): the VLAN's lower link tkn${tag} does not exist`);

      const refusedNames = ['second', 'ondown', 'onvlandown', 'nolower'];
      expect((await d.docker(['network', 'ls', '--format', '{{.Name}}'])).split('\n').filter((n) => refusedNames.includes(n))).toEqual([]);
      expect(await ownLinks(env)).toEqual(before.links);
      expect(storeRows(env)).toEqual(before.rows);
    });

    test('kill -9 of tsnet with VLAN networks and containers up: they keep talking, the restart leaks nothing, rm removes exactly what tsnet made', async () => {
      const d = env.docker;
      const v100 = `${trunk().a}.100`;
      const v200 = `${trunk().a}.200`;
      // VLAN 200 is the operator's here: made before tsnet sees it.
      await runOk('ip', ['link', 'add', 'link', trunk().a, 'name', v200, 'type', 'vlan', 'id', '200']);
      await runOk('ip', ['link', 'set', v200, 'up']);
      try {
        await macvlanNet('k100', v100, ['--subnet', '10.100.0.0/24']);
        await macvlanNet('k200', v200, ['--subnet', '10.200.0.0/24']);
        await runDetached(env, 'k1', ['--network', 'k100', '--ip', '10.100.0.31']);
        await runDetached(env, 'k2', ['--network', 'k200', '--ip', '10.200.0.31']);
        const links = await ownLinks(env);
        expect(links).toEqual([v100]);
        const rows = storeRows(env);

        await env.tsnet.kill9();
        expect(await ping(env, 'k1', hostB.v100)).toBe(true);
        expect(await ping(env, 'k2', hostB.v200)).toBe(true);
        await env.tsnet.start();
        expect(await ping(env, 'k1', hostB.v100)).toBe(true);
        expect(await trunk().ping('10.200.0.31')).toBe(true);
        expect(await ownLinks(env)).toEqual(links);
        expect(storeRows(env)).toEqual(rows);
        // The restarted tsnet still serves the networks: a new container joins.
        await runDetached(env, 'k3', ['--network', 'k100', '--ip', '10.100.0.32']);
        expect(await ping(env, 'k3', '10.100.0.31')).toBe(true);

        await d.docker(['rm', '-f', 'k1', 'k2', 'k3']);
        await d.docker(['network', 'rm', 'k100', 'k200']);
        await eventually(async () => expect(await linkDetails(v100)).toBeUndefined());
        expect((await linkDetails(v200))?.flags).toContain('UP');
        expect(await ownLinks(env)).toEqual([]);
        await eventually(() => expect(storeRows(env)).toEqual({}));
      } finally {
        await run('ip', ['link', 'del', v200]);
      }
    });
  });

  describe('ipvlan, and networks without a parent', () => {
    test('l2: containers share the parent MAC, reach each other and host B on the wire, with the gateway as default route', async () => {
      await create('l2net', ['mode=ipvlan', `parent=${trunk().a}`], ['--subnet', '10.50.0.0/24', '--gateway', '10.50.0.1']);
      await runDetached(env, 'i1', ['--network', 'l2net', '--ip', '10.50.0.10']);
      await runDetached(env, 'i2', ['--network', 'l2net', '--ip', '10.50.0.11']);
      expect(await ping(env, 'i1', '10.50.0.11')).toBe(true);
      expect(await ping(env, 'i2', hostB.untagged)).toBe(true);
      expect(await trunk().ping('10.50.0.10')).toBe(true);
      // One MAC on the wire: the parent's, for every container (what ipvlan is for).
      const parentMac = (await linkDetails(trunk().a))?.address;
      expect(parentMac).toMatch(/^[0-9a-f:]{17}$/);
      expect(await catIn(env, 'i1', '/sys/class/net/eth0/address')).toBe(parentMac);
      expect(await trunk().exec('ip', ['neigh', 'show', '10.50.0.10'])).toContain(`lladdr ${parentMac}`);
      expect(await env.docker.docker(['exec', 'i1', 'ip', 'route'])).toMatch(/default via 10\.50\.0\.1 dev eth0/);
      expect(storeRows(env)).toMatchObject({ network: 1, endpoint: 2, parent: 1 });
    });

    test('l3: containers on two subnets of one parent reach each other through the host, with no gateway and nothing on the wire', async () => {
      // A VLAN of the trunk tsnet makes, so the capture below sees only this network's frames (tagged 30).
      const parent = `${trunk().a}.30`;
      await create('l3net', ['mode=ipvlan', 'ipvlan_mode=l3', `parent=${parent}`], ['--subnet', '10.61.0.0/24', '--subnet', '10.62.0.0/24']);
      await runDetached(env, 'j1', ['--network', 'l3net', '--ip', '10.61.0.10']);
      await runDetached(env, 'j2', ['--network', 'l3net', '--ip', '10.62.0.10']);
      // Docker's l3: a connected default route out of the link, no gateway address.
      const routes = await env.docker.docker(['exec', 'j1', 'ip', 'route']);
      expect(routes).toMatch(/^default dev eth0/m);
      expect(routes).not.toMatch(/via/);
      const wire = await trunk().sniff('vlan 30');
      expect(await ping(env, 'j1', '10.62.0.10')).toBe(true);
      expect(await ping(env, 'j2', '10.61.0.10')).toBe(true);
      expect(await wire.stop()).toEqual([]);
      // l3 slaves answer no ARP: across the subnets there is no broadcast domain at all.
      expect((await env.docker.dockerTry(['exec', 'j1', 'arping', '-c', '1', '-w', '2', '-I', 'eth0', '10.62.0.10'])).code).not.toBe(0);
    });

    test('one ipvlan mode per parent: a network asking another mode or flag of a parent in use is refused', async () => {
      // The kernel keeps one mode (and flag) per ipvlan parent: a child made in another mode switches every
      // existing child of that parent to it, so a second network's Join would silently turn the first one's l2 into l3.
      await create('ml2', ['mode=ipvlan', `parent=${trunk().a}`], ['--subnet', '10.50.0.0/24']);
      for (const opt of ['ipvlan_mode=l3', 'ipvlan_flag=private']) {
        const r = await tryCreate('ml3', ['mode=ipvlan', opt, `parent=${trunk().a}`], ['--subnet', '10.51.0.0/24'], 'docker');
        expect({ opt, code: r.code }).toEqual({ opt, code: 1 });
        expect(r.stderr).toContain(`option parent="${trunk().a}" (mode=ipvlan)`);
      }
    });

    test('no parent: an internal network on a dummy link tsnet owns, for macvlan and ipvlan; removed with the network', async () => {
      await create('solo', ['mode=macvlan'], ['--subnet', '10.70.0.0/24']);
      await create('soloi', ['mode=ipvlan'], ['--subnet', '10.71.0.0/24']);
      const dummies = [`tsdm-${(await networkId(env, 'solo')).slice(0, 10)}`, `tsdm-${(await networkId(env, 'soloi')).slice(0, 10)}`];
      expect(await ownLinks(env)).toEqual([...dummies].sort());
      for (const dummy of dummies) {
        const link = await linkDetails(dummy);
        expect(link?.linkinfo?.info_kind).toBe('dummy');
        expect(link?.flags).toContain('UP');
      }
      await runDetached(env, 'd1', ['--network', 'solo', '--ip', '10.70.0.10']);
      await runDetached(env, 'd2', ['--network', 'solo', '--ip', '10.70.0.11']);
      await runDetached(env, 'e1', ['--network', 'soloi', '--ip', '10.71.0.10']);
      await runDetached(env, 'e2', ['--network', 'soloi', '--ip', '10.71.0.11']);
      expect(await ping(env, 'd1', '10.70.0.11')).toBe(true);
      expect(await ping(env, 'e2', '10.71.0.10')).toBe(true);
      // Internal: no default route, and dockerd added no second (gateway) interface.
      for (const c of ['d1', 'e1']) {
        expect(await env.docker.docker(['exec', c, 'ip', 'route'])).not.toMatch(/default/);
        expect((await env.docker.dockerTry(['exec', c, 'ip', 'link', 'show', 'eth1'])).code).not.toBe(0);
      }
      await env.docker.docker(['rm', '-f', 'd1', 'd2', 'e1', 'e2']);
      await env.docker.docker(['network', 'rm', 'solo', 'soloi']);
      await eventually(async () => {
        for (const dummy of dummies) expect(await linkDetails(dummy)).toBeUndefined();
      });
      await eventually(() => expect(storeRows(env)).toEqual({}));
    });
  });
});
