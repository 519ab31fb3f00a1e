import fs from 'node:fs';
import path from 'node:path';
import { containerIp, ping, runDetached } from '../harness/containers';
import { type Dockerd, startDockerd, TEMP_PREFIX } from '../harness/dockerd';
import { BUSYBOX_IMAGE, ensureBusyboxImage } from '../harness/busybox';
import { eventually, patient, run, runOk } from '../harness/exec';
import { describeE2E, linksOwnedBy } from '../harness/host';
import { removeLeftovers } from '../harness/tsnet';
import { tcpFrom } from '../harness/hostns';
import { buildPluginDir, cleanupSteps, installPlugin, makeVethParent, PLUGIN_BUILD_DIR, pluginArgs, type PluginSettings, removePlugin, runNames, sizeMiB } from '../harness/plugin';
import { Registry } from '../harness/registry';

/**
 * tsnet as a managed (v2) plugin: `make plugin-dir`, `docker plugin create` + `push` to Debian's docker-registry
 * on loopback from one private dockerd, `docker plugin install` on another, clean one; then the bridge and macvlan
 * smoke tests through it, and disable/enable, a dockerd restart and `docker plugin upgrade` keeping every network
 * and address (the state lives on the host mount, not in the plugin's rootfs).
 */
jest.setTimeout(patient(180_000));

const names = runNames('tp');
const { tag } = names;
const [BRIDGE_NET, MACVLAN_NET] = names.subnets;
const PARENT = names.parent;
const NFT_TABLE = names.nftTable;
/** The second version's plugin directory (hard links to the first, beside it on the same filesystem). */
const v2Dir = `${PLUGIN_BUILD_DIR}-v2-${tag}`;
/** A container command answering every TCP connection on port 8080 with "hello". */
const SERVER = ['nc', '-ll', '-p', '8080', '-e', 'echo', 'hello'];

describeE2E('managed plugin', () => {
  let tmp: string;
  let registry: Registry | undefined;
  let dockerd: Dockerd | undefined;
  let settings: PluginSettings;
  let v2: string;

  const docker = (args: string[]) => {
    if (!dockerd) throw new Error('no dockerd');
    return dockerd.docker.docker(args, { timeoutMs: patient(120_000) });
  };
  const env = () => {
    if (!dockerd) throw new Error('no dockerd');
    return { docker: dockerd.docker };
  };

  beforeAll(async () => {
    tmp = fs.mkdtempSync(`${TEMP_PREFIX}plugin-`);
    await buildPluginDir();
    registry = await Registry.start(tmp);
    const ref = `${registry.address}/tsnet-${tag}:latest`;
    v2 = `${registry.address}/tsnet-${tag}:v2`;
    // Built and pushed from a dockerd of its own: the one that installs it has never seen the plugin.
    const builder = await startDockerd();
    try {
      const created = performance.now();
      await builder.docker.docker(['plugin', 'create', ref, PLUGIN_BUILD_DIR], { timeoutMs: patient(300_000) });
      const pushed = performance.now();
      await builder.docker.docker(['plugin', 'push', ref], { timeoutMs: patient(300_000) });
      const done = performance.now();
      console.log(
        `plugin: rootfs ${await sizeMiB(path.join(PLUGIN_BUILD_DIR, 'rootfs'))} MiB, in the registry ${await sizeMiB(path.join(tmp, 'data'))} MiB; ` +
          `create ${Math.round(pushed - created)} ms, push ${Math.round(done - pushed)} ms`,
      );
      // The second version differs by one file (dockerd refuses to create the same layer twice), as a rebuild would.
      await runOk('cp', ['-al', PLUGIN_BUILD_DIR, v2Dir]);
      fs.writeFileSync(path.join(v2Dir, 'rootfs', 'app', 'VERSION'), 'v2\n');
      await builder.docker.docker(['plugin', 'create', v2, v2Dir], { timeoutMs: patient(300_000) });
      await builder.docker.docker(['plugin', 'push', v2], { timeoutMs: patient(300_000) });
    } finally {
      fs.rmSync(v2Dir, { recursive: true, force: true });
      // Removed by dockerd itself: the harness's cleanup gives deleting a data-root 10 s, not enough for two rootfs.
      await removePlugin(builder.docker, ref);
      await removePlugin(builder.docker, v2);
      await builder.destroy();
    }
    dockerd = await startDockerd();
    await ensureBusyboxImage(dockerd.docker);
    settings = { ref, stateDir: path.join(dockerd.dir, 'tsnet-state'), dockerSocket: dockerd.socket, nftTable: NFT_TABLE };
    const ms = await installPlugin(dockerd.docker, settings);
    console.log(`plugin: install (pull from the registry, unpack, enable) ${ms} ms`);
    await makeVethParent(names);
  }, patient(1_200_000));

  afterAll(async () => {
    const d = dockerd;
    await cleanupSteps([
      ...(d
        ? [
            () => d.docker.removeAllContainers(),
            () => d.docker.removeCustomNetworks(),
            // Links are deleted in the background after the call: wait for them before stopping tsnet.
            () => eventually(async () => expect(await linksOwnedBy(`tsnet:${NFT_TABLE}`)).toEqual([]), patient(20_000), 250),
            () => removePlugin(d.docker, settings.ref),
            () => removePlugin(d.docker, v2),
            () => d.destroy(),
          ]
        : []),
      // Anything of this tsnet's left (links, nft tables, DOCKER-USER rules) is a leak: removed, and reported.
      () => removeLeftovers({ name: NFT_TABLE }),
      () => run('ip', ['link', 'del', PARENT]),
      async () => registry?.stop(),
      async () => fs.rmSync(tmp, { recursive: true, force: true }),
    ]);
  }, patient(180_000));

  /** Networks (name → id) and every container's address on them, as dockerd reports them. */
  async function snapshot(): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const n of ['pb', 'pm']) out[n] = await docker(['network', 'inspect', '-f', '{{.Id}}', n]);
    for (const [c, n] of [['ca', 'pb'], ['cb', 'pb'], ['web', 'pb'], ['m1', 'pm'], ['m2', 'pm']]) out[c] = await containerIp(env(), c, n);
    return out;
  }

  /** Everything still works: the same addresses, containers reach each other, the published port answers. */
  async function check(before: Record<string, string>): Promise<void> {
    await eventually(async () => expect(await snapshot()).toEqual(before), patient(30_000), 500);
    await eventually(async () => expect(await ping(env(), 'ca', before.cb)).toBe(true), patient(20_000), 500);
    await eventually(async () => expect(await ping(env(), 'm1', before.m2)).toBe(true), patient(20_000), 500);
    await eventually(async () => expect(await tcpFrom(undefined, '127.0.0.1', names.port)).toBe('hello\n'), patient(20_000), 500);
    // The IPAM's state came back too: a new container gets an address nobody holds.
    await runDetached(env(), 'fresh', ['--network', 'pb']);
    expect(Object.values(before)).not.toContain(await containerIp(env(), 'fresh', 'pb'));
    await docker(['rm', '-f', 'fresh']);
    // ...and an address a container holds is refused to another (the IPAM did not forget it).
    const dup = await env().docker.dockerTry(['run', '-d', '--name', 'dup', '--network', 'pb', '--ip', before.ca, BUSYBOX_IMAGE, 'sleep', '60']);
    await env().docker.dockerTry(['rm', '-f', 'dup']);
    expect(dup.code).not.toBe(0);
  }

  let before: Record<string, string>;

  test('bridge network: containers reach each other, a published port answers on loopback', async () => {
    const d = settings.ref;
    await docker(['network', 'create', '-d', d, '--ipam-driver', d, '--subnet', `${BRIDGE_NET}.0/24`, 'pb']);
    // dockerd names the network's driver by the plugin's reference: tsnet must call itself that (TSNET_DRIVER_NAME).
    expect(await docker(['network', 'inspect', '-f', '{{.Driver}} {{.IPAM.Driver}}', 'pb'])).toBe(`${d} ${d}`);
    // The plugin's own /proc/sys is read-only: tsnet wrote the host's through the proc mount (a new bridge has 0).
    const id = await docker(['network', 'inspect', '-f', '{{.Id}}', 'pb']);
    expect(fs.readFileSync(`/proc/sys/net/ipv6/conf/tsbr-${id.slice(0, 10)}/disable_ipv6`, 'utf8').trim()).toBe('1');
    // Static addresses: after a dockerd restart, dockerd asks the IPAM afresh for containers without --ip (as with
    // its own IPAM), in whatever order they come back; these must be granted again, so nothing stale is held.
    const always = ['--restart', 'always', '--network', 'pb'];
    await runDetached(env(), 'ca', [...always, '--ip', `${BRIDGE_NET}.10`]);
    await runDetached(env(), 'cb', [...always, '--ip', `${BRIDGE_NET}.11`]);
    await runDetached(env(), 'web', [...always, '--ip', `${BRIDGE_NET}.12`, '-p', `127.0.0.1:${names.port}:8080`], SERVER);
    expect(await ping(env(), 'ca', await containerIp(env(), 'cb', 'pb'))).toBe(true);
    expect(await ping(env(), 'cb', 'ca')).toBe(true);
    await eventually(async () => expect(await tcpFrom(undefined, '127.0.0.1', names.port)).toBe('hello\n'), patient(20_000), 500);
  });

  test('macvlan network on a veth parent: children reach each other', async () => {
    const d = settings.ref;
    await docker(['network', 'create', '-d', d, '--ipam-driver', d, '-o', 'mode=macvlan', '-o', `parent=${PARENT}`, '--subnet', `${MACVLAN_NET}.0/24`, 'pm']);
    await runDetached(env(), 'm1', ['--restart', 'always', '--network', 'pm', '--ip', `${MACVLAN_NET}.10`]);
    await runDetached(env(), 'm2', ['--restart', 'always', '--network', 'pm', '--ip', `${MACVLAN_NET}.11`]);
    expect(await ping(env(), 'm1', await containerIp(env(), 'm2', 'pm'))).toBe(true);
    before = await snapshot();
  });

  test('disable and enable keep every network and address', async () => {
    await docker(['plugin', 'disable', '-f', settings.ref]);
    await docker(['plugin', 'enable', settings.ref]);
    await check(before);
  });

  test('a dockerd restart keeps them', async () => {
    if (!dockerd) throw new Error('no dockerd');
    await dockerd.stop();
    await dockerd.start();
    await check(before);
  });

  test('docker plugin upgrade to a second push keeps them', async () => {
    await docker(['plugin', 'disable', '-f', settings.ref]);
    await docker(['plugin', 'upgrade', '--grant-all-permissions', '--skip-remote-check', settings.ref, v2]);
    // dockerd 20.10's upgrade puts the settings back to the manifest's defaults: set them again before enabling.
    await docker(['plugin', 'set', settings.ref, ...pluginArgs(settings)]);
    await docker(['plugin', 'enable', settings.ref]);
    // The upgraded plugin keeps its name (the reference networks use) and runs the second push.
    expect(await docker(['plugin', 'inspect', '-f', '{{.PluginReference}}', settings.ref])).toBe(v2);
    await check(before);
  });
});
