/** dnsmasq serving the bench's names from a hosts file only: no upstream, no /etc/hosts, bound to its own address. */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { isRunning, spawnDaemon, terminate } from '../../test/harness/exec';

export class Dnsmasq {
  private child: ChildProcess | undefined;
  readonly hostsPath: string;
  readonly logFile: string;

  constructor(
    readonly dir: string,
    readonly address: string,
    readonly port: number,
    readonly ttl: number,
  ) {
    this.hostsPath = path.join(dir, 'dnsmasq.hosts');
    this.logFile = path.join(dir, 'dnsmasq.log');
  }

  get pid(): number | undefined {
    return this.child && isRunning(this.child) ? this.child.pid : undefined;
  }

  /** `--user=root`: the hosts file sits in the run's private temp dir, which user nobody cannot read. */
  start(hosts: string): void {
    fs.writeFileSync(this.hostsPath, hosts);
    this.child = spawnDaemon(
      'dnsmasq',
      [
        '--keep-in-foreground',
        '--conf-file=/dev/null',
        '--no-resolv',
        '--no-hosts',
        `--addn-hosts=${this.hostsPath}`,
        `--listen-address=${this.address}`,
        '--bind-interfaces',
        `--port=${this.port}`,
        `--local-ttl=${this.ttl}`,
        '--user=root',
        `--pid-file=${path.join(this.dir, 'dnsmasq.pid')}`,
      ],
      { logFile: this.logFile },
    );
  }

  async stop(): Promise<void> {
    const c = this.child;
    this.child = undefined;
    if (c) await terminate(c, 5_000);
  }
}
