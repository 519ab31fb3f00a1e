/**
 * Smoke test of the e2e harness itself (no tsnet): a private dockerd runs a busybox container, survives a restart
 * on the same data-root, and leaves no process, mount or directory behind.
 */
import fs from 'node:fs';
import { BUSYBOX_IMAGE, ensureBusyboxImage } from '../harness/busybox';
import { Dockerd } from '../harness/dockerd';
import { runOk } from '../harness/exec';
import { describeE2E, isLiveProcess, mountsUnder } from '../harness/host';

const STEP_TIMEOUT_MS = 60_000;

describeE2E('e2e harness', () => {
  let dockerd: Dockerd | undefined;

  afterAll(async () => {
    await dockerd?.destroy();
  }, STEP_TIMEOUT_MS);

  test(
    'starts a private dockerd and runs a busybox container',
    async () => {
      dockerd = new Dockerd({ iptables: true });
      await dockerd.start();
      expect(dockerd.pid).toBeGreaterThan(0);
      await ensureBusyboxImage(dockerd.docker);
      // Idempotent: the second call finds the image.
      await ensureBusyboxImage(dockerd.docker);
      const out = await dockerd.docker.docker(['run', '--rm', '--network', 'none', BUSYBOX_IMAGE, 'sh', '-c', 'true && hostname && echo ok']);
      expect(out.split('\n').pop()).toBe('ok');
      expect(await dockerd.docker.docker(['ps', '-aq'])).toBe('');
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'restarts dockerd on the same data-root keeping the image',
    async () => {
      const d = dockerd;
      if (!d) throw new Error('previous test did not start dockerd');
      const oldPid = d.pid;
      await d.stop();
      expect(d.pid).toBeUndefined();
      expect(oldPid !== undefined && isLiveProcess(oldPid)).toBe(false);
      await d.start();
      expect(d.pid).not.toBe(oldPid);
      expect(await d.docker.docker(['image', 'inspect', '--format', '{{.Id}}', BUSYBOX_IMAGE])).toMatch(/^sha256:/);
      await d.docker.docker(['run', '--rm', '--network', 'none', BUSYBOX_IMAGE, 'true']);
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'destroy leaves no dockerd, container process, mount or temp dir',
    async () => {
      const d = dockerd;
      if (!d) throw new Error('previous test did not start dockerd');
      // A running container makes the shutdown path non-trivial (netns and overlay mounts, shim processes);
      // busybox as pid 1 ignores SIGTERM, so a short stop timeout keeps dockerd's shutdown quick.
      const containerPid = await runSleeper(d, ['--stop-timeout', '1']);
      expect(mountsUnder(d.dir).length).toBeGreaterThan(0);
      const pid = d.pid;
      await d.destroy();
      await expectGone(d, [pid, containerPid]);
    },
    STEP_TIMEOUT_MS,
  );

  test(
    'dockerd survives kill -9 and restart; destroy after a crash still removes everything',
    async () => {
      const d = new Dockerd({ iptables: false });
      dockerd = d;
      await d.start();
      await ensureBusyboxImage(d.docker);
      // dockerd stops the crashed run's containers while it starts; busybox ignores SIGTERM, so stop them fast.
      await runSleeper(d, ['--stop-timeout', '1']);
      const firstPid = d.pid;
      await d.kill9();
      expect(d.pid).toBeUndefined();
      await d.start();
      expect(await d.docker.docker(['image', 'ls', '-q', BUSYBOX_IMAGE])).not.toBe('');
      const containerPid = await runSleeper(d, []);
      const pid = d.pid;
      await d.kill9();
      await d.destroy();
      await expectGone(d, [firstPid, pid, containerPid]);
    },
    STEP_TIMEOUT_MS,
  );
});

/** Starts a detached `sleep 600` container and returns its host pid. */
async function runSleeper(d: Dockerd, runArgs: string[]): Promise<number> {
  const id = await d.docker.docker(['run', '-d', ...runArgs, '--network', 'none', BUSYBOX_IMAGE, 'sleep', '600']);
  const pid = Number(await d.docker.docker(['inspect', '--format', '{{.State.Pid}}', id]));
  expect(isLiveProcess(pid)).toBe(true);
  return pid;
}

async function expectGone(d: Dockerd, pids: (number | undefined)[]): Promise<void> {
  // Killed container processes are reaped by pid 1 in their own time; a zombie is not alive.
  for (const pid of pids) expect(pid !== undefined && isLiveProcess(pid)).toBe(false);
  expect(mountsUnder(d.dir)).toEqual([]);
  expect(fs.existsSync(d.dir)).toBe(false);
  const { stdout } = await runOk('ps', ['-eo', 'args']);
  expect(stdout).not.toContain(d.dir);
}
