/**
 * Restarting a suite's dockerd the ways a host does: its own daemon.json (so `live-restore` can be switched with a
 * SIGHUP, as dockerd reloads it) and the time its API takes to answer `/_ping` after a start.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { Dockerd } from './dockerd';
import { eventually, onProcessExit, patient, sleep } from './exec';

/** A daemon.json of the suite's own, in a temp dir removed at exit; pass `--config-file PATH` to dockerd. */
export class DaemonConfig {
  readonly file: string;
  private readonly dir: string;
  private readonly unregister: () => void;

  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-daemon-json-'));
    this.file = path.join(this.dir, 'daemon.json');
    this.write({});
    const dir = this.dir;
    this.unregister = onProcessExit(() => fs.rmSync(dir, { recursive: true, force: true }));
  }

  write(config: Record<string, unknown>): void {
    fs.writeFileSync(this.file, JSON.stringify(config));
  }

  /** Switches `live-restore` in the file and in the running dockerd (SIGHUP), waiting until `docker info` says so. */
  async setLiveRestore(d: Dockerd, on: boolean): Promise<void> {
    this.write({ 'live-restore': on });
    const pid = d.pid;
    if (pid === undefined) return;
    process.kill(pid, 'SIGHUP');
    await eventually(async () => expect(await d.docker.docker(['info', '-f', '{{.LiveRestoreEnabled}}'])).toBe(String(on)), patient(10_000), 100);
  }

  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
    this.unregister();
  }
}

function pingOnce(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ socketPath, path: '/_ping', timeout: 1_000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

/**
 * Runs `d.start()` while polling `/_ping` on its socket every 10 ms; resolves with the ms from the call until the
 * first 200 (dockerd answers only once its boot, restarting restart-policy containers included, is done).
 */
export async function timedStart(d: Dockerd): Promise<number> {
  const t0 = performance.now();
  const seen: { answeredAt?: number; stop?: true } = {};
  const poller = (async () => {
    while (!seen.stop && seen.answeredAt === undefined) {
      if (await pingOnce(d.socket)) seen.answeredAt = performance.now();
      else await sleep(10);
    }
  })();
  try {
    await d.start();
    // start() polls `docker version` at its own pace; the poller may need one more round.
    await eventually(() => expect(seen.answeredAt).toBeDefined(), 5_000, 10);
  } finally {
    seen.stop = true;
    await poller;
  }
  return Math.round((seen.answeredAt ?? NaN) - t0);
}
