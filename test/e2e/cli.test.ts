import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { AdminClient } from '../../src/admin/client';
import type { StatusReport } from '../../src/admin/contract';
import { runDetached } from '../harness/containers';
import { run, type RunResult, runOk } from '../harness/exec';
import { describeE2E } from '../harness/host';
import { pluginCall, REPO_ROOT, setupE2E } from '../harness/tsnet';

/**
 * The `tsnet` CLI against a real tsnet (its admin socket in the suite's state dir) and a private dockerd: status,
 * ports of a container publishing one, reconcile after one of tsnet's veths is deleted by hand, doctor.
 */
describeE2E('tsnet CLI', () => {
  const env = setupE2E({ tsnetArgs: (d) => ['--docker-socket', d.socket, '--dns-listen', 'none'] });
  const suffix = randomBytes(3).toString('hex');
  const net = `cli${suffix}`;
  const web = `web${suffix}`;
  const third = 16 + (randomBytes(1)[0] % 200);
  const subnet = `10.238.${third}.0/24`;

  /** `bin/tsnet SUBCOMMAND ARGS` on the suite's admin socket (a later `--admin-socket` in ARGS wins); output trimmed. */
  const tsnet = async ([sub, ...args]: string[]): Promise<RunResult> => {
    const r = await run(path.join(REPO_ROOT, 'bin', 'tsnet'), [sub, '--admin-socket', env.tsnet.adminSocket, ...args], { env: { ...process.env, TSNET_NODE: process.execPath }, timeoutMs: 120_000 });
    return { ...r, stdout: r.stdout.trimEnd() };
  };

  beforeAll(async () => {
    await env.docker.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '--subnet', subnet, net]);
    await runDetached(env, web, ['--network', net, '-p', '18080:80', '-p', '127.0.0.1::53/udp']);
  }, 120_000);

  test('status: the network with its pool use and the container endpoint', async () => {
    const r = await tsnet(['status']);
    expect(r.code).toBe(0);
    const id = await env.docker.docker(['network', 'inspect', '-f', '{{.Id}}', net]);
    expect(r.stdout).toMatch(/^tsnet \S+, ready, up /);
    expect(r.stdout).toMatch(new RegExp(`${id.slice(0, 12)}\\s+bridge\\s+\\S+\\s+${subnet.replace(/\./g, '\\.')}\\s+1\\s+2/256`));
    const json = JSON.parse((await tsnet(['status', '--json'])).stdout) as StatusReport;
    expect(json.store.ok).toBe(true);
    expect(json.endpoints.filter((e) => e.networkId === id).map((e) => [e.joined, e.ports])).toEqual([[true, 2]]);
  }, 60_000);

  test("the admin socket is 0600 and its /metrics is the daemon's Prometheus registry", async () => {
    expect(fs.statSync(env.tsnet.adminSocket).mode & 0o777).toBe(0o600);
    expect(await new AdminClient(env.tsnet.adminSocket).metrics()).toMatch(/^tsnet_plugin_calls_total\{method="NetworkDriver.CreateNetwork",outcome="ok"\} 1$/m);
  }, 60_000);

  test('ports CONTAINER prints what was published, in docker port format', async () => {
    const r = await tsnet(['ports', web]);
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')).toEqual([expect.stringMatching(/^53\/udp -> 127\.0\.0\.1:\d+$/), '80/tcp -> 0.0.0.0:18080']);
    const all = await tsnet(['ports']);
    expect(all.stdout).toContain(`${web}  80/tcp -> 0.0.0.0:18080`);
    const unknown = await tsnet(['ports', `nosuch${suffix}`]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('no running container');
  }, 60_000);

  test('reconcile --dry-run shows the repair of a veth deleted by hand; reconcile applies it', async () => {
    // An endpoint made straight on the plugin socket is never joined: its veth pair stays on the host.
    const nid = await env.docker.docker(['network', 'inspect', '-f', '{{.Id}}', net]);
    const eid = randomBytes(32).toString('hex');
    const created = await pluginCall(env.tsnet.socket, 'NetworkDriver.CreateEndpoint', { NetworkID: nid, EndpointID: eid, Interface: { Address: `10.238.${third}.200/24` }, Options: {} });
    expect(created.status).toBe(200);
    try {
      expect((await tsnet(['reconcile', '--dry-run'])).stdout).toBe('nothing to repair: the host matches the records');
      const status = JSON.parse((await tsnet(['status', '--json'])).stdout) as StatusReport;
      const link = status.endpoints.find((e) => e.id === eid)?.link;
      expect(link).toBeDefined();
      await runOk('ip', ['link', 'del', link ?? '']);
      const dry = await tsnet(['reconcile', '--dry-run']);
      expect(dry.code).toBe(0);
      expect(dry.stdout).toMatch(/repair\(s\) planned \(dry run, nothing changed\):/);
      expect(dry.stdout).toContain(link);
      expect((await run('ip', ['link', 'show', link ?? ''])).code).not.toBe(0);
      const applied = await tsnet(['reconcile']);
      expect(applied.code).toBe(0);
      expect(applied.stdout).toMatch(/^applied \d+ repair\(s\):/);
      await runOk('ip', ['link', 'show', link ?? '']);
      expect((await tsnet(['reconcile', '--dry-run'])).stdout).toBe('nothing to repair: the host matches the records');
    } finally {
      await pluginCall(env.tsnet.socket, 'NetworkDriver.DeleteEndpoint', { NetworkID: nid, EndpointID: eid });
    }
  }, 120_000);

  test('doctor: one verdict a line; the sockets answer; exit 1 exactly when a line is FAIL', async () => {
    const r = await tsnet(['doctor', '--socket', env.tsnet.socket, '--docker-socket', env.dockerd.socket]);
    const lines = r.stdout.split('\n').filter((l) => !l.startsWith('      fix: '));
    for (const l of lines) expect(l).toMatch(/^(ok {2}|warn|FAIL) {2}[^:]+: /);
    for (const name of ['kernel: bridge', 'kernel: veth', 'nftables', 'Docker socket', 'plugin socket', 'admin socket']) expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^ok    ${name}: `)));
    expect(lines).toContainEqual(expect.stringMatching(/^ok {4}dockerd firewall: /));
    expect(r.code).toBe(lines.some((l) => l.startsWith('FAIL')) ? 1 : 0);
  }, 120_000);

  test('doctor with the daemon down says so and exits 1', async () => {
    const r = await tsnet(['doctor', '--socket', `${env.tsnet.socket}.none`, '--docker-socket', env.dockerd.socket, '--admin-socket', `${env.tsnet.adminSocket}.none`]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^FAIL {2}admin socket: .*is the daemon running\?/m);
    expect(r.stdout).toMatch(/^FAIL {2}plugin socket: /m);
  }, 120_000);
});
