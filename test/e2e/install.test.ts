import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BUSYBOX_IMAGE, ensureBusyboxImage } from '../harness/busybox';
import { containerIp, ping, runDetached } from '../harness/containers';
import { startDockerd } from '../harness/dockerd';
import { timedStart } from '../harness/dockerd-restart';
import { eventually, fileTail, isRunning, onProcessExit, patient, run, runOk, spawnDaemon, terminate, waitFor } from '../harness/exec';
import { describeE2E } from '../harness/host';
import { ensureBuilt, pluginCall, pluginSocketPath, removeLeftovers, REPO_ROOT, setupE2E, TsnetProcess } from '../harness/tsnet';

/**
 * The legacy install: `make install PREFIX=<tmp>` (the pinned runtime, production modules, the launcher, the systemd
 * units), the units checked with `systemd-analyze verify`, then tsnet started as its units would start it (systemd is
 * not PID 1 here): the socket bound first by `systemd-socket-activate` (tsnet.socket's ListenStream, on a per-run path)
 * and tsnet launched by the first connection to it, with tsnet.service's ExecStart, environment and capability
 * bounding set. A private dockerd then boots with a `--restart always` container on a tsnet network: it must boot
 * about as fast as a dockerd with no plugin at all (both times are printed) and bring the container back with its
 * address. Uninstall removes every file install made.
 */
jest.setTimeout(patient(240_000));

/** systemd's PATH for services (no node on it but the host's, which the installed tsnet must not use). */
const UNIT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** `Key=value` lines of a unit file (the last one of a key wins, as for these single-valued keys). */
function unitKeys(file: string): Map<string, string> {
  const keys = new Map<string, string>();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) keys.set(m[1], m[2]);
  }
  return keys;
}

function key(keys: Map<string, string>, name: string): string {
  const v = keys.get(name);
  if (v === undefined) throw new Error(`unit has no ${name}=`);
  return v;
}

/** `CAP_NET_ADMIN CAP_NET_RAW` → setpriv's `-all,+net_admin,+net_raw`. */
function setprivBounding(caps: string): string {
  return ['-all', ...caps.split(/\s+/).map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(',');
}

/** The unit's ExecStart with the socket and state dir of this run, plus what a test tsnet needs of its own. */
function execStart(service: Map<string, string>, socket: string, stateDir: string, extra: string[]): string[] {
  const argv = key(service, 'ExecStart').split(/\s+/);
  const set = (flag: string, value: string) => {
    const i = argv.indexOf(flag);
    if (i < 0) throw new Error(`ExecStart has no ${flag}`);
    argv[i + 1] = value;
  };
  set('--socket', socket);
  set('--state-dir', stateDir);
  return [...argv, ...extra];
}

/** Files and symlinks under `dir`, relative. */
function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => !e.isDirectory()).map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
}

describeE2E('legacy install with systemd units (make install, socket activation)', () => {
  const prefix = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-install-'));
  const unregister = onProcessExit(() => fs.rmSync(prefix, { recursive: true, force: true }));
  const unitDir = path.join(prefix, 'lib', 'systemd', 'system');
  let unit: ChildProcess | undefined;
  let tsnet: TsnetProcess | undefined;
  let socket = '';
  let stateDir = '';
  let logFile = '';

  // Registered before setupE2E's teardown, so it runs while dockerd is still up: containers and networks go through
  // dockerd and the installed tsnet, then tsnet stops and must have left nothing.
  afterAll(async () => {
    const d = env.dockerd;
    if (d.pid !== undefined) {
      await d.docker.removeAllContainers().catch(() => undefined);
      await d.docker.removeCustomNetworks().catch(() => undefined);
    }
    if (unit) await terminate(unit, patient(15_000));
    fs.rmSync(socket, { force: true });
    if (tsnet) await removeLeftovers(tsnet);
    fs.rmSync(prefix, { recursive: true, force: true });
    unregister();
  }, patient(120_000));
  // The control boot below freezes for dockerd's plugin retries (~15 s per lookup): more than start()'s default wait.
  const env = setupE2E({ tsnet: false, dockerd: { readyTimeoutMs: patient(120_000) } });

  const nodeVersion = /^NODE_VERSION := (\S+)$/m.exec(fs.readFileSync(path.join(REPO_ROOT, 'Makefile'), 'utf8'))?.[1];
  /**
   * Make with the runtime install ships (the pinned one) in the repository. The modules and dist/ count as up to date
   * (`-o`): ensureBuilt() made dist/, and the tests never reinstall the node_modules they are running from.
   */
  const make = (target: string, vars: string[]) =>
    runOk('make', ['--no-print-directory', '-o', `node_modules/.tsnet-v${nodeVersion}`, '-o', 'dist/main.js', target, 'NODE_RUNTIME=pinned', ...vars], { cwd: REPO_ROOT, timeoutMs: patient(600_000) });

  /** Binds tsnet.socket's socket (this run's path) and waits for the file: tsnet starts on the first connection. */
  async function startUnits(): Promise<void> {
    const sock = unitKeys(path.join(unitDir, 'tsnet.socket'));
    const service = unitKeys(path.join(unitDir, 'tsnet.service'));
    const argv = execStart(service, socket, stateDir, ['--log-level', 'debug', '--nft-table', env.name, '--fw-mark', `0x${(tsnet?.fwMark ?? 0).toString(16)}`, '--docker-socket', env.dockerd.socket]);
    // systemd binds the socket anew at boot (/run is empty then); systemd-socket-activate refuses an existing file.
    fs.rmSync(socket, { force: true });
    const child = spawnDaemon(
      'systemd-socket-activate',
      ['-l', socket, `--fdname=${key(sock, 'FileDescriptorName')}`, '--', 'setpriv', '--bounding-set', setprivBounding(key(service, 'CapabilityBoundingSet')), '--no-new-privs', '--', ...argv],
      { logFile, env: { PATH: UNIT_PATH, LANG: 'C.UTF-8' } },
    );
    unit = child;
    await waitFor(
      () => {
        if (!isRunning(child)) throw new Error(`socket activation exited (code ${child.exitCode})\n${fileTail(logFile)}`);
        return fs.existsSync(socket);
      },
      patient(10_000),
      () => `no socket ${socket}\n${fileTail(logFile)}`,
    );
  }

  beforeAll(async () => {
    await ensureBuilt();
    await make('install', [`PREFIX=${prefix}`]);
    socket = pluginSocketPath(env.name);
    stateDir = path.join(env.dockerd.dir, 'tsnet-state');
    logFile = path.join(env.dockerd.dir, 'tsnet.log');
    // Not started: names the suite's nft table and mark bit, and checks what tsnet left at the end.
    tsnet = new TsnetProcess({ name: env.name, stateDir, logFile, socket });
  }, patient(600_000));

  test('install: the units verify, name the installed launcher and are ordered before docker.service', async () => {
    const units = ['tsnet.socket', 'tsnet.service'].map((u) => path.join(unitDir, u));
    const verify = await run('systemd-analyze', ['verify', ...units], { timeoutMs: patient(30_000) });
    expect({ code: verify.code, stderr: verify.stderr.trim() }).toEqual({ code: 0, stderr: '' });
    const sock = unitKeys(units[0]);
    const service = unitKeys(units[1]);
    expect(sock.get('ListenStream')).toBe('/run/docker/plugins/tsnet.sock');
    expect(['0600', '0660']).toContain(sock.get('SocketMode'));
    expect(sock.get('Before')).toContain('docker.service');
    expect(service.get('Before')).toContain('docker.service');
    expect(service.get('Restart')).toBe('on-failure');
    expect(key(service, 'ExecStart').split(' ')[0]).toBe(path.join(prefix, 'bin', 'tsnet'));
    // The launcher runs the runtime installed beside dist/, not the host's node (v18 on Debian 12).
    const installedNode = path.join(prefix, 'lib', 'tsnet', 'node', 'bin', 'node');
    expect((await runOk(installedNode, ['--version'])).stdout.trim()).toBe(`v${nodeVersion}`);
    const help = await runOk(path.join(prefix, 'bin', 'tsnet'), ['--help'], { env: { PATH: UNIT_PATH } });
    expect(help.stdout).toMatch(/^usage: tsnet/);
    // Production modules only.
    expect(fs.existsSync(path.join(prefix, 'lib', 'tsnet', 'node_modules', 'express'))).toBe(true);
    expect(fs.existsSync(path.join(prefix, 'lib', 'tsnet', 'node_modules', 'jest'))).toBe(false);
  });

  test('dockerd boots as fast as without a plugin and brings back a --restart always container with its --ip (a stale socket: neither)', async () => {
    // Baseline: a dockerd with no plugin configured at all, one --restart always container, restarted.
    const plain = await startDockerd({ iptables: true });
    let baselineMs: number;
    try {
      await ensureBusyboxImage(plain.docker);
      await plain.docker.docker(['run', '-d', '--name', 'plain', '--restart', 'always', '--stop-signal', 'SIGKILL', '--network', 'none', BUSYBOX_IMAGE, 'sleep', '3600']);
      await plain.stop();
      baselineMs = await timedStart(plain);
    } finally {
      await plain.destroy();
    }

    await startUnits();
    const d = env.dockerd;
    await d.docker.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '--subnet', '10.246.0.0/24', '--gateway', '10.246.0.1', 'boot']);
    await runDetached(env, 'always', ['--restart', 'always', '--stop-signal', 'SIGKILL', '--network', 'boot', '--ip', '10.246.0.10']);

    // A host going down: dockerd, then tsnet; the socket is systemd's, so tsnet's stop leaves the file.
    await d.stop();
    if (!unit) throw new Error('units not started');
    expect(await terminate(unit, patient(15_000))).toBe('exited');
    expect(fs.statSync(socket).isSocket()).toBe(true);
    // Control: the same boot with that file stale (nobody listening, as after a tsnet not started before dockerd)
    // is the freeze this test must be able to see.
    const staleMs = await timedStart(d);
    const staleRunning = await d.docker.docker(['inspect', '-f', '{{.State.Running}}', 'always']);
    console.log(`control: dockerd boot with a stale plugin socket: ${staleMs} ms, container running: ${staleRunning}`);
    expect(staleMs >= baselineMs + 15_000 || staleRunning !== 'true').toBe(true);
    await d.stop();
    // Boot: the socket first (sockets.target, before docker.service), tsnet only on dockerd's first call.
    await startUnits();
    const withTsnetMs = await timedStart(d);
    console.log(`dockerd boot to first /_ping: ${baselineMs} ms without any plugin, ${withTsnetMs} ms with tsnet installed (socket activated), ${staleMs} ms with a stale socket`);
    // dockerd's plugin lookups give up after ~30 s (measured here: a missing plugin freezes its boot that long);
    // half of that above the baseline cannot be load, only a freeze.
    expect(withTsnetMs).toBeLessThan(baselineMs + 15_000);

    await eventually(async () => expect(await d.docker.docker(['inspect', '-f', '{{.State.Running}}', 'always'])).toBe('true'), patient(30_000), 200);
    expect(await containerIp(env, 'always', 'boot')).toBe('10.246.0.10');
    expect(await ping(env, 'always', '10.246.0.1')).toBe(true);
    // tsnet was started by that boot's first plugin call (not before dockerd, as a socket-activated unit is).
    const listening = fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"message":"tsnet listening"'));
    expect(listening).toHaveLength(2);
    // On the socket it was handed (LISTEN_FDNAMES from FileDescriptorName=), not one of its own.
    for (const l of listening) expect(JSON.parse(l)).toMatchObject({ activated: 'tsnet', socket });
    expect(await pluginCall(socket, 'Plugin.Activate', {})).toMatchObject({ status: 200 });
  });

  test('uninstall removes every file install made', async () => {
    expect(filesUnder(prefix).length).toBeGreaterThan(100);
    await make('uninstall', [`PREFIX=${prefix}`]);
    expect(filesUnder(prefix)).toEqual([]);
  });

  test('DESTDIR stages the same tree under the final paths, and uninstall with it removes it', async () => {
    const dest = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-destdir-'));
    try {
      await make('install', [`DESTDIR=${dest}`, 'PREFIX=/usr/local']);
      const root = path.join(dest, 'usr', 'local');
      expect(fs.readlinkSync(path.join(root, 'bin', 'tsnet'))).toBe('/usr/local/lib/tsnet/bin/tsnet');
      expect(unitKeys(path.join(root, 'lib', 'systemd', 'system', 'tsnet.service')).get('ExecStart')).toMatch(/^\/usr\/local\/bin\/tsnet /);
      expect(fs.existsSync(path.join(root, 'lib', 'tsnet', 'dist', 'main.js'))).toBe(true);
      await make('uninstall', [`DESTDIR=${dest}`, 'PREFIX=/usr/local']);
      expect(filesUnder(dest)).toEqual([]);
    } finally {
      fs.rmSync(dest, { recursive: true, force: true });
    }
  }, patient(600_000));
});
