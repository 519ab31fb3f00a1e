import { randomBytes } from 'node:crypto';
import { eventually, patient, run, runOk } from '../harness/exec';
import { arping, cleanAfterEach, linkDetails, ownLinks, ping, runDetached, storeRows, vethPair } from '../harness/containers';
import { describeKernel } from '../harness/kernel';
import { setupE2E } from '../harness/tsnet';
import { useTrunk } from '../harness/trunk';

/**
 * macvlan networks on 802.1Q subinterfaces (`-o parent=<trunk>.100`) through the docker CLI, against two hosts on
 * one trunk: this host (end A of a veth) and host B (a namespace at end B with its own VLAN 100 and 200
 * subinterfaces). Needs a kernel with 802.1Q; `make test` runs it in a VM otherwise.
 */
jest.setTimeout(patient(180_000));

describeKernel(['vlan'], 'macvlan on 802.1Q VLAN parents', () => {
  const env = setupE2E({ dockerd: { iptables: true } });
  const hostB = { v100: '10.100.0.2', v200: '10.200.0.2', container100: '10.100.0.3' };
  const trunk = useTrunk(async (t) => {
    const v100 = await t.vlan(100, `${hostB.v100}/24`);
    await t.vlan(200, `${hostB.v200}/24`);
    // A container of host B's on VLAN 100 (a macvlan child there, as its own tsnet or Docker would make).
    await t.macvlan(v100, `${hostB.container100}/24`);
  });
  cleanAfterEach(env);

  /** `docker network create` of a tsnet macvlan network on `parent`; extra args (subnet, options) follow. */
  async function macvlanNet(name: string, parent: string, args: string[], ipam: 'tsnet' | 'docker' = 'tsnet'): Promise<string> {
    const ipamArgs = ipam === 'tsnet' ? ['--ipam-driver', env.name] : [];
    return env.docker.docker(['network', 'create', '-d', env.name, ...ipamArgs, '-o', 'mode=macvlan', '-o', `parent=${parent}`, ...args, name]);
  }

  test('the subinterface is made (up, VLAN id 100, tsnet owner tag); VLAN 100 reaches host B on VLAN 100 only, tagged on the wire', async () => {
    const d = env.docker;
    const v100 = `${trunk().a}.100`;
    await macvlanNet('n100', v100, ['--subnet', '10.100.0.0/24', '--gateway', '10.100.0.1']);
    const link = await linkDetails(v100);
    expect(link).toMatchObject({ link: trunk().a, ifalias: `tsnet:${env.name}`, linkinfo: { info_kind: 'vlan', info_data: { protocol: '802.1Q', id: 100 } } });
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
  });

  test('networks on one subinterface share it, and it goes with the last of them; an existing subinterface is never deleted', async () => {
    const v100 = `${trunk().a}.100`;
    await macvlanNet('low', v100, ['--subnet', '10.100.0.0/25']);
    await macvlanNet('high', v100, ['--subnet', '10.100.0.128/25']);
    expect(await ownLinks(env)).toEqual([v100]);
    await runDetached(env, 'lo1', ['--network', 'low', '--ip', '10.100.0.20']);
    await runDetached(env, 'hi1', ['--network', 'high', '--ip', '10.100.0.130']);
    expect(await ping(env, 'hi1', hostB.v100)).toBe(true);
    // Same VLAN, same wire: the two networks' containers meet there (macvlan bridge mode, one parent).
    expect(await arping(env, 'lo1', '10.100.0.130')).toBe(true);

    // The network that made the link goes first: the link is the link's, not that network's.
    await env.docker.docker(['rm', '-f', 'lo1']);
    await env.docker.docker(['network', 'rm', 'low']);
    expect((await linkDetails(v100))?.flags).toContain('UP');
    expect(await ping(env, 'hi1', hostB.v100)).toBe(true);
    await env.docker.docker(['rm', '-f', 'hi1']);
    await env.docker.docker(['network', 'rm', 'high']);
    await eventually(async () => expect(await linkDetails(v100)).toBeUndefined());

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
    const overlap = await d.dockerTry(['network', 'create', '-d', env.name, '-o', 'mode=macvlan', '-o', `parent=${v100}`, '--subnet', '10.100.0.128/25', 'second']);
    expect(overlap.code).not.toBe(0);
    expect(overlap.stderr).toContain(`option parent="${v100}" (mode=macvlan): subnet 10.100.0.128/25 overlaps subnet 10.100.0.0/24`);

    const tag = randomBytes(2).toString('hex');
    const down = `tkd${tag}a`;
    const pair = await vethPair(down, `tkd${tag}b`);
    try {
      const refused = await d.dockerTry(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '-o', 'mode=macvlan', '-o', `parent=${down}`, '--subnet', '10.41.0.0/24', 'ondown']);
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain(`option parent="${down}" (mode=macvlan): the link is down`);
      expect((await linkDetails(down))?.flags).not.toContain('UP');
      // An existing subinterface that is down is the operator's too: refused, not brought up.
      await runOk('ip', ['link', 'add', 'link', down, 'name', `${down}.7`, 'type', 'vlan', 'id', '7']);
      const vlanDown = await d.dockerTry(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '-o', 'mode=macvlan', '-o', `parent=${down}.7`, '--subnet', '10.42.0.0/24', 'onvlandown']);
      expect(vlanDown.stderr).toContain(`option parent="${down}.7" (mode=macvlan): the link is down`);
      expect((await linkDetails(`${down}.7`))?.flags).not.toContain('UP');
    } finally {
      await pair.del();
    }
    const orphan = `tkn${tag}.100`;
    const noLower = await d.dockerTry(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '-o', 'mode=macvlan', '-o', `parent=${orphan}`, '--subnet', '10.43.0.0/24', 'nolower']);
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
