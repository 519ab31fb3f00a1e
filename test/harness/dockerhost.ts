/**
 * A second Docker host on this machine, for tests across hosts: a network namespace with its own dockerd and tsnet
 * running in it. Only the network is its own (files, mounts and /run/docker/plugins are shared with the host), so its
 * tsnet has a name of its own: dockerd finds a plugin by its socket's name.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ensureBusyboxImage } from './busybox';
import { type Docker, Dockerd } from './dockerd';
import { onProcessExit, runOk, runSync } from './exec';
import { delNetns, makeNetns } from './host';
import { pluginSocketPath, startTsnet, type TsnetProcess, uniquePluginName } from './tsnet';

export class DockerHost {
  /** Driver and IPAM name of this host's tsnet. */
  readonly name = uniquePluginName();
  readonly ns = `${this.name}-${process.pid}`;
  private dockerd: Dockerd | undefined;
  private proc: TsnetProcess | undefined;
  private readonly unregister: () => void;

  private constructor() {
    const { ns, name } = this;
    this.unregister = onProcessExit(() => {
      fs.rmSync(pluginSocketPath(name), { force: true });
      runSync('ip', ['netns', 'del', ns]);
    });
  }

  /** The namespace (lo up), then dockerd and tsnet in it; on failure whatever started is torn down again. */
  static async create(): Promise<DockerHost> {
    const h = new DockerHost();
    try {
      await makeNetns(h.ns);
      await runOk('ip', ['-n', h.ns, 'link', 'set', 'lo', 'up']);
      const d = new Dockerd({ iptables: true, netns: h.ns });
      h.dockerd = d;
      await d.start();
      await ensureBusyboxImage(d.docker);
      const dir = path.join(d.dir, 'tsnet');
      h.proc = await startTsnet({ name: h.name, stateDir: path.join(dir, 'state'), logFile: path.join(dir, 'tsnet.log'), netns: h.ns });
    } catch (err) {
      await h.destroy();
      throw err;
    }
    return h;
  }

  get docker(): Docker {
    if (!this.dockerd) throw new Error(`no dockerd in ${this.ns}`);
    return this.dockerd.docker;
  }

  get tsnet(): TsnetProcess {
    if (!this.proc) throw new Error(`no tsnet in ${this.ns}`);
    return this.proc;
  }

  /** Containers and networks, tsnet, dockerd (with its dir), the namespace; every step runs; never throws. */
  async destroy(): Promise<void> {
    const d = this.dockerd;
    if (d?.pid !== undefined) {
      await d.docker.removeAllContainers().catch(() => undefined);
      await d.docker.removeCustomNetworks().catch(() => undefined);
    }
    await this.proc?.stop().catch(() => undefined);
    if (this.proc) fs.rmSync(this.proc.socket, { force: true });
    await d?.destroy().catch(() => undefined);
    await delNetns(this.ns).catch(() => undefined);
    this.unregister();
  }
}
