import path from 'node:path';
import Database from 'better-sqlite3';
import { BUSYBOX_IMAGE, ensureBusyboxImage } from '../harness/busybox';
import { type Dockerd, startDockerd } from '../harness/dockerd';
import { eventually, patient, run } from '../harness/exec';
import { describeE2E, linksOwnedBy } from '../harness/host';
import { buildPluginDir, cleanupSteps, createPlugin, makeVethParent, type PluginSettings, removePlugin, runNames } from '../harness/plugin';
import { removeLeftovers } from '../harness/tsnet';

/**
 * Swarm services on tsnet networks: a single-node swarm on a private dockerd with tsnet as a managed plugin (swarm
 * refuses legacy plugins). A swarm-scoped network takes its driver options and IPAM from a `--config-only` network
 * (`--config-from`); the manager allocates the tasks' addresses through tsnet's IPAM. Two replicas on a macvlan
 * network and two on a bridge network get distinct addresses and reach each other.
 */
jest.setTimeout(patient(180_000));

const names = runNames('ts');
const [MACVLAN_NET, BRIDGE_NET] = names.subnets;
const PARENT = names.parent;
const NFT_TABLE = names.nftTable;
const REF = `tsnet-sw${names.tag}:latest`;

describeE2E('swarm', () => {
  let dockerd: Dockerd | undefined;

  const docker = (args: string[]) => {
    if (!dockerd) throw new Error('no dockerd');
    return dockerd.docker.docker(args, { timeoutMs: patient(120_000) });
  };

  beforeAll(async () => {
    await buildPluginDir();
    dockerd = await startDockerd();
    await ensureBusyboxImage(dockerd.docker);
    const settings: PluginSettings = { ref: REF, stateDir: path.join(dockerd.dir, 'tsnet-state'), dockerSocket: dockerd.socket, nftTable: NFT_TABLE };
    await createPlugin(dockerd.docker, settings);
    // Ports of this run's own: another swarm on the host (or a later run) must not meet this one.
    const { port } = names;
    await docker(['swarm', 'init', '--advertise-addr', '127.0.0.1', '--listen-addr', `127.0.0.1:${port}`, '--data-path-port', String(port + 1)]);
    await makeVethParent(names);
  }, patient(1_200_000));

  afterAll(async () => {
    const d = dockerd;
    await cleanupSteps([
      ...(d
        ? [
            async () => {
              const services = (await docker(['service', 'ls', '-q'])).split('\n').filter(Boolean);
              if (services.length > 0) await docker(['service', 'rm', ...services]);
              await eventually(async () => expect(await docker(['ps', '-aq'])).toBe(''), patient(60_000), 500);
            },
            // Swarm removes its networks in the background; the config-only ones can go once those have.
            () =>
              eventually(
                async () => {
                  for (const n of ['swm', 'swb']) await d.docker.dockerTry(['network', 'rm', n]);
                  for (const n of ['swmcfg', 'swbcfg']) {
                    const r = await d.docker.dockerTry(['network', 'rm', n]);
                    expect(r.code === 0 || r.stderr.includes('No such network') || r.stderr.includes('not found')).toBe(true);
                  }
                },
                patient(60_000),
                1_000,
              ),
            () => eventually(async () => expect(await linksOwnedBy(`tsnet:${NFT_TABLE}`)).toEqual([]), patient(20_000), 250),
            () => docker(['swarm', 'leave', '--force']),
            // Swarm mode made docker_gwbridge (a Linux bridge on the host, with iptables rules): dockerd removes it
            // once its ingress sandbox is gone with the swarm.
            () => eventually(async () => expect(await docker(['network', 'rm', 'docker_gwbridge'])).toBe('docker_gwbridge'), patient(30_000), 1_000),
            () => removePlugin(d.docker, REF),
            () => d.destroy(),
          ]
        : []),
      () => removeLeftovers({ name: NFT_TABLE }),
      () => run('ip', ['link', 'del', PARENT]),
    ]);
  }, patient(240_000));

  /** Keys of the address records in the plugin's store (on the host mount), read-only while it runs. */
  function addressesInStore(): string[] {
    const db = new Database(path.join(dockerd?.dir ?? '', 'tsnet-state', 'tsnet.db'), { readonly: true, fileMustExist: true });
    try {
      return (db.prepare("SELECT key FROM records WHERE collection = 'address'").all() as Array<{ key: string }>).map((r) => r.key);
    } finally {
      db.close();
    }
  }

  /** The replicas' containers and their addresses on `network`, once `replicas` of them run. */
  async function replicas(service: string, network: string, count: number): Promise<Array<{ id: string; ip: string }>> {
    let found: Array<{ id: string; ip: string }> = [];
    await eventually(
      async () => {
        const ids = (await docker(['ps', '-q', '--filter', `label=com.docker.swarm.service.name=${service}`])).split('\n').filter(Boolean);
        expect(ids).toHaveLength(count);
        found = await Promise.all(ids.map(async (id) => ({ id, ip: await docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, id]) })));
      },
      patient(60_000),
      500,
    );
    return found;
  }

  async function serviceOn(kind: 'macvlan' | 'bridge', net: string, subnet: string): Promise<void> {
    const cfg = `${net}cfg`;
    const opts = kind === 'macvlan' ? ['-o', 'mode=macvlan', '-o', `parent=${PARENT}`] : [];
    await docker(['network', 'create', '--config-only', '--ipam-driver', REF, ...opts, '--subnet', `${subnet}.0/24`, cfg]);
    await docker(['network', 'create', '-d', REF, '--scope', 'swarm', '--config-from', cfg, net]);
    const service = `${net}svc`;
    await docker(['service', 'create', '-d', '--no-resolve-image', '--name', service, '--replicas', '2', '--network', net, BUSYBOX_IMAGE, 'sleep', '3600']);
    const [a, b] = await replicas(service, net, 2);
    expect(a.ip).not.toBe(b.ip);
    for (const ip of [a.ip, b.ip]) expect(ip.startsWith(`${subnet}.`)).toBe(true);
    for (const [from, to] of [[a, b], [b, a]]) {
      await eventually(async () => expect((await dockerd?.docker.dockerTry(['exec', from.id, 'ping', '-c', '1', '-W', '2', to.ip]))?.code).toBe(0), patient(20_000), 500);
    }
    // The addresses came from tsnet's IPAM (the manager's allocator called it): they are in its store.
    expect(addressesInStore().filter((k) => k.endsWith(`|${a.ip}`) || k.endsWith(`|${b.ip}`))).toHaveLength(2);
  }

  test('a service with 2 replicas on a tsnet macvlan network', async () => {
    await serviceOn('macvlan', 'swm', MACVLAN_NET);
  });

  test('a service with 2 replicas on a tsnet bridge network (one node: the bridge is per host)', async () => {
    await serviceOn('bridge', 'swb', BRIDGE_NET);
  });
});
