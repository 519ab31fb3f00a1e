/** One bench run's private dockerd and the tsnet under test, started for the measurements and kept for the teardown. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureBusyboxImage } from '../../test/harness/busybox';
import { type Docker, type Dockerd, startDockerd } from '../../test/harness/dockerd';
import { onProcessExit } from '../../test/harness/exec';
import { ensureBuilt, TsnetProcess, uniquePluginName } from '../../test/harness/tsnet';
import { linkHarnessRoot } from './config';
import { progress, setOwnDockerd } from './progress';
import { TsnetLog } from './tsnet-log';

export interface Started {
  dockerd: Dockerd;
  docker: Docker;
  tsnet: TsnetProcess;
  /** tsnet's driver name (`-d`, `--ipam-driver`), also its nft table and owner tag. */
  name: string;
  log: TsnetLog;
}

export class Session {
  readonly started = new Date();
  readonly t0 = performance.now();
  readonly loadStart = os.loadavg();
  /** Set as soon as each starts, so the teardown gets whatever did. */
  dockerd: Dockerd | undefined;
  tsnet: TsnetProcess | undefined;
  private unregisterSocket: (() => void) | undefined;

  private constructor() {}

  /** The tsnet under test built and linked where the compiled harness looks for it. */
  static async prepare(): Promise<Session> {
    linkHarnessRoot();
    await ensureBuilt();
    return new Session();
  }

  /**
   * A private dockerd (`--iptables=true`) with the busybox image, then tsnet as a legacy plugin on a unique socket at
   * `--log-level debug` (its log gives per-call and per-step times); `beforeTsnet` runs in between. `tsnetArgs` (of that
   * dockerd, e.g. its socket) come after the harness's own (a later `--log-level` wins).
   */
  async start(beforeTsnet: (dockerd: Dockerd) => Promise<void> = async () => undefined, tsnetArgs: (dockerd: Dockerd) => string[] = () => []): Promise<Started> {
    progress('starting a private dockerd (--iptables=true)');
    const dockerd = await startDockerd({ iptables: true });
    this.dockerd = dockerd;
    setOwnDockerd(dockerd.pid);
    const docker = dockerd.docker;
    await ensureBusyboxImage(docker);
    await beforeTsnet(dockerd);
    const name = uniquePluginName();
    const logFile = path.join(dockerd.dir, 'tsnet', 'tsnet.log');
    const extraArgs = tsnetArgs(dockerd);
    const tsnet = new TsnetProcess({ name, stateDir: path.join(dockerd.dir, 'tsnet', 'state'), logFile, extraArgs });
    this.tsnet = tsnet;
    const socket = tsnet.socket;
    this.unregisterSocket = onProcessExit(() => fs.rmSync(socket, { force: true }));
    progress(`starting tsnet as legacy plugin "${name}" (${['--log-level debug', ...extraArgs].join(' ')})`);
    await tsnet.start();
    return { dockerd, docker, tsnet, name, log: new TsnetLog(logFile) };
  }

  /** After the teardown: the exit hook that would remove the plugin socket is no longer needed. */
  release(): void {
    this.unregisterSocket?.();
  }
}
