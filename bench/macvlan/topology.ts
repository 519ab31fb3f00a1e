/**
 * The macvlan bench's own wire: a "LAN peer" namespace and, per variant (raw, tsnet, Docker), a veth pair whose
 * host end is the macvlan parent and whose other end sits in the LAN namespace with the subnet's `.1`. The raw
 * variant's two endpoints are macvlan children of its parent in two namespaces of their own, made with `ip` as a
 * container runtime would, without Docker. Every name carries the run's tag; nothing here is a `ts…` link (tsnet's
 * own and e2e leak checks look at those), and no traffic leaves the host.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { onProcessExit, run, runOk, runSync, sleep, spawnDaemon, terminate, waitFor } from '../../test/harness/exec';
import { delNetns, makeNetns } from '../../test/harness/host';
import { linkGone } from '../lib/host';

export const VARIANTS = ['raw', 'tsnet', 'docker'] as const;
export type Variant = (typeof VARIANTS)[number];

/** One variant's wire: the parent (host namespace), its LAN end and the /24 both sides use. */
export interface Wire {
  parent: string;
  lanIf: string;
  /** `a.b.c` of the /24; the LAN peer is `.1` (the network's gateway), endpoints get addresses from `.2`. */
  subnet24: string;
  /** Port of the LAN peer's iperf3 server for this variant. */
  lanPort: number;
}

/** iperf3 server port in the raw server namespace and in the server containers. */
export const C2C_PORT = 5201;

export class Topology {
  readonly tag = randomBytes(2).toString('hex');
  readonly lanNs = `mvb-lan-${this.tag}`;
  readonly wires: Record<Variant, Wire>;
  /** The raw pair: client and server namespaces, each with a macvlan child of the raw parent as eth0. */
  readonly raw = { client: `mvb-rawc-${this.tag}`, server: `mvb-raws-${this.tag}`, clientIp: '', serverIp: '' };
  private readonly namespaces = new Set<string>();
  private readonly servers: ChildProcess[] = [];
  /** Pids of the iperf3 servers started here, for the check that none is left. */
  readonly serverPids: number[] = [];
  private readonly unregisterExit: () => void;

  constructor(private readonly logDir: string) {
    const wire = (v: string, k: number): Wire => ({ parent: `mvb${v}${this.tag}`, lanIf: `lan${v}`, subnet24: `10.218.${k}`, lanPort: 5220 + k });
    this.wires = { raw: wire('r', 1), tsnet: wire('t', 2), docker: wire('d', 3) };
    // A bench killed before its teardown still leaves no namespace (and so no veth pair) behind.
    this.unregisterExit = onProcessExit(() => {
      for (const ns of this.namespaces) runSync('ip', ['netns', 'del', ns]);
    });
  }

  private async netns(name: string): Promise<void> {
    await makeNetns(name);
    this.namespaces.add(name);
    await runOk('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  }

  /** The LAN namespace, the three parent veth pairs (up, parents without addresses) and the raw pair. */
  async build(): Promise<void> {
    await this.netns(this.lanNs);
    for (const v of VARIANTS) {
      const w = this.wires[v];
      await runOk('ip', ['link', 'add', w.parent, 'type', 'veth', 'peer', 'name', w.lanIf, 'netns', this.lanNs]);
      await runOk('ip', ['-n', this.lanNs, 'addr', 'add', `${w.subnet24}.1/24`, 'dev', w.lanIf]);
      await runOk('ip', ['-n', this.lanNs, 'link', 'set', w.lanIf, 'up']);
      await runOk('ip', ['link', 'set', w.parent, 'up']);
    }
    const w = this.wires.raw;
    this.raw.serverIp = `${w.subnet24}.2`;
    this.raw.clientIp = `${w.subnet24}.3`;
    await this.rawEndpoint(this.raw.server, 's', this.raw.serverIp);
    await this.rawEndpoint(this.raw.client, 'c', this.raw.clientIp);
  }

  /** A macvlan child (bridge mode) of the raw parent, moved into `ns` as eth0 and addressed: a container without Docker. */
  private async rawEndpoint(ns: string, suffix: string, ip: string): Promise<void> {
    const parent = this.wires.raw.parent;
    const child = `${parent}${suffix}`;
    await this.netns(ns);
    await runOk('ip', ['link', 'add', 'link', parent, 'name', child, 'type', 'macvlan', 'mode', 'bridge']);
    await runOk('ip', ['link', 'set', child, 'netns', ns]);
    await runOk('ip', ['-n', ns, 'link', 'set', child, 'name', 'eth0']);
    await runOk('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await runOk('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
  }

  /** `iperf3 -s` in namespace `ns` on `address:port`, listening when this returns. */
  async startServer(ns: string, address: string, port: number): Promise<void> {
    const logFile = path.join(this.logDir, `iperf3-${ns}-${port}.log`);
    const child = spawnDaemon('ip', ['netns', 'exec', ns, 'iperf3', '-s', '-B', address, '-p', String(port)], { logFile });
    this.servers.push(child);
    if (child.pid !== undefined) this.serverPids.push(child.pid);
    await waitFor(
      async () => {
        if (child.exitCode !== null || child.signalCode !== null)
          throw new Error(`iperf3 -s in ${ns} on ${address}:${port} exited: ${fs.readFileSync(logFile, 'utf8').trim()}`);
        return (await run('ip', ['netns', 'exec', ns, 'ss', '-ltnH', `sport = :${port}`])).stdout.includes(address);
      },
      10_000,
      () => `iperf3 -s in ${ns} on ${address}:${port} not listening after 10 s`,
    );
  }

  /** The LAN peer's servers (one per variant, on its `.1`) and the raw pair's server. */
  async startServers(): Promise<void> {
    for (const v of VARIANTS) await this.startServer(this.lanNs, `${this.wires[v].subnet24}.1`, this.wires[v].lanPort);
    await this.startServer(this.raw.server, this.raw.serverIp, C2C_PORT);
  }

  async stopServers(): Promise<void> {
    for (let s = this.servers.pop(); s; s = this.servers.pop()) await terminate(s, 3_000);
  }

  /** `cmd args` inside namespace `ns` (the raw endpoints, the LAN peer). */
  exec(ns: string, cmd: string, args: string[], timeoutMs: number) {
    return run('ip', ['netns', 'exec', ns, cmd, ...args], { timeoutMs });
  }

  /** Names of the macvlan children of `parent` in the host namespace (`child@parent`). */
  async childrenOf(parent: string): Promise<string[]> {
    const out = (await runOk('ip', ['-o', 'link', 'show', 'type', 'macvlan'])).stdout;
    return [...out.matchAll(/^\d+: ([^@:\s]+)@([^:\s]+):/gm)].filter((m) => m[2] === parent).map((m) => m[1]);
  }

  /**
   * Stops the servers and deletes the namespaces (each takes its veth ends, and so the pairs and every macvlan child
   * of the parents); the names of parents still there 5 s later, then deleted by hand.
   */
  async destroy(): Promise<string[]> {
    await this.stopServers();
    for (const ns of this.namespaces) await delNetns(ns);
    this.namespaces.clear();
    this.unregisterExit();
    // The kernel dismantles a deleted namespace in the background: its veth ends (and so the parents) go a moment later.
    const parents = VARIANTS.map((v) => this.wires[v].parent);
    const present = async () => {
      const out: string[] = [];
      for (const p of parents) if (!(await linkGone(p))) out.push(p);
      return out;
    };
    const deadline = Date.now() + 5_000;
    while ((await present()).length > 0 && Date.now() < deadline) await sleep(50);
    const leftover = await present();
    for (const p of leftover) await run('ip', ['link', 'del', 'dev', p]);
    return leftover;
  }
}

interface IpLinkJson {
  mtu: number;
  qdisc?: string;
  txqlen?: number;
  gso_max_size?: number;
  gso_max_segs?: number;
  num_tx_queues?: number;
  linkinfo?: { info_kind?: string; info_data?: { mode?: string } };
}

/**
 * eth0 of an endpoint as one line: link kind, macvlan mode and the settings that bear on throughput, so the results
 * show that the three variants' links are alike. `ipArgv` runs `ip` in the endpoint's namespace.
 */
export async function eth0Summary(ipArgv: string[]): Promise<string> {
  const [cmd, ...args] = ipArgv;
  const [l] = JSON.parse((await runOk(cmd, [...args, '-d', '-j', 'link', 'show', 'dev', 'eth0'])).stdout) as IpLinkJson[];
  const kind = l.linkinfo?.info_kind ?? '?';
  return `${kind} ${l.linkinfo?.info_data?.mode ?? ''}, mtu ${l.mtu}, qdisc ${l.qdisc ?? '?'}, txqlen ${l.txqlen ?? '?'}, gso ${l.gso_max_size ?? '?'}/${l.gso_max_segs ?? '?'}, ${l.num_tx_queues ?? '?'} tx queue(s)`;
}
