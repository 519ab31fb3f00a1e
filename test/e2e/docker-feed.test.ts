/**
 * The Docker feed against a real dockerd (Debian's 20.10, API 1.41): a container on a tsnet network with
 * `--network-alias` appears with its address and alias; rename and stop/start are seen; after dockerd restarts the
 * feed reconnects and resyncs.
 */
import type { ContainerInfo, DockerStatus } from '../../src/docker/contract';
import { DockerEventFeed } from '../../src/docker/feed';
import { containerIp, runDetached } from '../harness/containers';
import { eventually, patient } from '../harness/exec';
import { describeE2E } from '../harness/host';
import { setupE2E } from '../harness/tsnet';

jest.setTimeout(patient(180_000));

describeE2E('Docker feed against dockerd 20.10', () => {
  const env = setupE2E({ dockerd: { iptables: true } });
  let feed: DockerEventFeed | undefined;
  const snapshots: ContainerInfo[][] = [];
  const statuses: DockerStatus[] = [];
  const byName = (): Map<string, ContainerInfo> => new Map((snapshots.at(-1) ?? []).map((c) => [c.name, c]));

  afterAll(async () => {
    await feed?.stop();
  });

  test('alias, rename, stop/start and a dockerd restart reach the feed', async () => {
    const d = env.docker;
    await d.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '--subnet', '172.31.77.0/24', 'feednet']);
    const netId = await d.docker(['network', 'inspect', 'feednet', '-f', '{{.Id}}']);
    feed = new DockerEventFeed({ socketPath: env.dockerd.socket, backoffInitialMs: 100, backoffCapMs: 1000 });
    feed.onContainers((c) => snapshots.push([...c]));
    feed.onStatus((s) => statuses.push(s));
    feed.start();
    await eventually(() => expect(statuses.at(-1)).toEqual({ up: true, apiVersion: '1.41' }), patient(10_000));

    await runDetached(env, 'web', ['--network', 'feednet', '--network-alias', 'API', '--hostname', 'webhost', '--restart', 'always', '--stop-timeout', '1']);
    const id = await d.docker(['inspect', '-f', '{{.Id}}', 'web']);
    const ip = await containerIp(env, 'web', 'feednet');
    await eventually(() => {
      expect(byName().get('web')).toEqual({
        id,
        name: 'web',
        hostname: 'webhost',
        networks: [{ networkId: netId, networkName: 'feednet', ipv4: ip, aliases: [id.slice(0, 12), 'api'].sort() }],
      });
    }, patient(5_000));

    await d.docker(['rename', 'web', 'web2']);
    await eventually(() => expect([...byName().keys()]).toEqual(['web2']), patient(5_000));
    await d.docker(['stop', '-t', '1', 'web2']);
    await eventually(() => expect(byName().size).toBe(0), patient(5_000));
    await d.docker(['start', 'web2']);
    await eventually(() => expect(byName().get('web2')?.networks[0]?.ipv4).toBe(ip), patient(5_000));

    const upsBefore = statuses.filter((s) => s.up).length;
    await env.dockerd.stop();
    await eventually(() => expect(statuses.at(-1)?.up).toBe(false), patient(10_000));
    // dockerd stops it on the way down and restarts it (policy "always"): the resync must show it running again.
    await env.dockerd.start();
    await eventually(() => expect(statuses.filter((s) => s.up).length).toBe(upsBefore + 1), patient(30_000));
    await eventually(async () => {
      const now = await containerIp(env, 'web2', 'feednet');
      expect(byName().get('web2')?.networks[0]?.ipv4).toBe(now);
    }, patient(30_000), 200);
    // And events flow on the new stream.
    await runDetached(env, 'late', ['--network', 'feednet', '--stop-timeout', '1']);
    await eventually(() => expect(byName().has('late')).toBe(true), patient(5_000));
  });
});
