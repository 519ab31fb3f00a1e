import { catIn, cleanAfterEach, linkDetails, networkId, ownLinks, ping, runDetached, storeRows } from '../harness/containers';
import { eventually, patient } from '../harness/exec';
import { describeKernel } from '../harness/kernel';
import { setupE2E } from '../harness/tsnet';
import { useTrunk } from '../harness/trunk';

/**
 * ipvlan networks (l2 and l3) and parent-less networks on a dummy link tsnet owns, through the docker CLI, with host
 * B as a namespace at the other end of a veth "trunk". Needs ipvlan, dummy and 802.1Q links in the kernel; `make
 * test` runs it in a VM otherwise.
 */
jest.setTimeout(patient(180_000));

describeKernel(['ipvlan', 'dummy', 'vlan'], 'ipvlan networks and networks without a parent', () => {
  const env = setupE2E({ dockerd: { iptables: true } });
  const hostB = '10.50.0.2';
  const trunk = useTrunk(async (t) => {
    await t.exec('ip', ['addr', 'add', `${hostB}/24`, 'dev', t.b]);
  });
  cleanAfterEach(env);

  function create(name: string, options: string[], args: string[]): Promise<string> {
    const opts = options.flatMap((o) => ['-o', o]);
    return env.docker.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, ...opts, ...args, name]);
  }

  test('l2: containers share the parent MAC, reach each other and host B on the wire, with the gateway as default route', async () => {
    await create('l2net', ['mode=ipvlan', `parent=${trunk().a}`], ['--subnet', '10.50.0.0/24', '--gateway', '10.50.0.1']);
    await runDetached(env, 'i1', ['--network', 'l2net', '--ip', '10.50.0.10']);
    await runDetached(env, 'i2', ['--network', 'l2net', '--ip', '10.50.0.11']);
    expect(await ping(env, 'i1', '10.50.0.11')).toBe(true);
    expect(await ping(env, 'i2', hostB)).toBe(true);
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
