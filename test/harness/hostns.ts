/**
 * tsnet in a fresh network namespace standing in for the host, with the test acting as dockerd over the plugin
 * socket. Links, sysctls (ip_forward, br_netfilter's bridge-nf-call-*) and nftables tables are per namespace, so
 * such a "host" starts as a fresh machine without dockerd's iptables rules (the `--iptables=false` situation) and
 * nothing a test does there reaches the real host. Containers and LAN machines are more namespaces.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { onProcessExit, run, runOk, runSync, sleep, spawnDaemon, terminate } from './exec';
import { delNetns, makeNetns } from './host';
import { makePeer, type Peer, type PeerOptions } from './lan';
import { startTsnet, type TsnetProcess } from './tsnet';

/** A namespace standing in for a container: the endpoint's veth end moved in as `eth0`, addressed as Join says. */
export interface Container {
  ns: string;
  /** Address without prefix. */
  ip: string;
  endpointId: string;
  networkId: string;
  exec(cmd: string, args: string[], timeoutMs?: number): Promise<string>;
}

export interface HostNetwork {
  id: string;
  bridge: string;
  /** `a.b.c` of the /24. */
  subnet24: string;
}

/** A TCP server answering every connection with `reply` (Node's, so it runs in any namespace). */
function tcpServerScript(port: number, reply: string, host = '0.0.0.0'): string {
  return `require('net').createServer(s=>s.end(${JSON.stringify(reply)})).listen(${port},${JSON.stringify(host)})`;
}

/** Connects, prints what the server sends; exits non-zero when nothing answers within 2 s. */
function tcpClientScript(host: string, port: number): string {
  return `const s=require('net').connect(${port},${JSON.stringify(host)});let b='';s.setTimeout(2000,()=>process.exit(3));s.on('data',d=>b+=d);s.on('end',()=>{process.stdout.write(b);process.exit(0)});s.on('error',()=>process.exit(2))`;
}

/** What a TCP connection from namespace `ns` (the host namespace when undefined) to host:port receives, or undefined when nothing answers. */
export async function tcpFrom(ns: string | undefined, host: string, port: number): Promise<string | undefined> {
  const client = [process.execPath, '-e', tcpClientScript(host, port)];
  const [cmd, args] = ns === undefined ? [process.execPath, client.slice(1)] : ['ip', ['netns', 'exec', ns, ...client]];
  const res = await run(cmd, args, { timeoutMs: 10_000 });
  return res.code === 0 ? res.stdout : undefined;
}

/** Namespaces made by this process, deleted at exit even when a test forgot (or crashed before) its cleanup. */
const live = new Set<string>();
onProcessExit(() => {
  for (const ns of live) runSync('ip', ['netns', 'del', ns]);
});

async function netns(name: string): Promise<string> {
  await makeNetns(name);
  live.add(name);
  await runOk('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return name;
}

async function dropNetns(name: string): Promise<void> {
  await delNetns(name).catch(() => undefined);
  live.delete(name);
}

export class HostNs {
  readonly tag = randomBytes(3).toString('hex');
  readonly ns: string;
  readonly dir: string;
  private proc: TsnetProcess | undefined;
  private readonly peers: Peer[] = [];
  private readonly containers: Container[] = [];
  private readonly daemons: ChildProcess[] = [];
  private seq = 0;

  private constructor() {
    this.ns = `tsh${this.tag}-${process.pid}`;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-hostns-'));
  }

  /** A fresh host namespace (lo up) with `sysctls` written before tsnet starts in it (with `extraArgs` too). */
  static async create(sysctls: Record<string, string> = {}, extraArgs: string[] = []): Promise<HostNs> {
    const h = new HostNs();
    try {
      await netns(h.ns);
      for (const [key, value] of Object.entries(sysctls)) await h.sysctl(key, value);
      h.proc = await startTsnet({
        name: `tsh${h.tag}`,
        socket: path.join(h.dir, 'tsnet.sock'),
        stateDir: path.join(h.dir, 'state'),
        logFile: path.join(h.dir, 'tsnet.log'),
        netns: h.ns,
        extraArgs,
      });
    } catch (err) {
      await h.destroy();
      throw err;
    }
    return h;
  }

  /** The tsnet process serving this host (started by create()). */
  get tsnet(): TsnetProcess {
    if (!this.proc) throw new Error(`tsnet is not running in ${this.ns}`);
    return this.proc;
  }

  /** Runs a command inside the host namespace; its stdout. */
  async exec(cmd: string, args: string[], timeoutMs = 15_000): Promise<string> {
    return (await runOk('ip', ['netns', 'exec', this.ns, cmd, ...args], { timeoutMs })).stdout;
  }

  async sysctl(key: string, value?: string): Promise<string> {
    if (value !== undefined) await this.exec('sh', ['-c', `echo ${value} > /proc/sys/${key}`]);
    return (await this.exec('cat', [`/proc/sys/${key}`])).trim();
  }

  /** A LAN machine wired to the host namespace by a veth (`hostIf` there). */
  async lan(name: string, hostIf: string, subnet24: string, opts: Omit<PeerOptions, 'hostNs'> = {}): Promise<Peer> {
    const p = await makePeer(`${name}${this.tag}`, hostIf, subnet24, { ...opts, hostNs: this.ns });
    live.add(p.ns);
    this.peers.push(p);
    return p;
  }

  /** A plugin call that must answer 200; its body. */
  async call(method: string, body: unknown): Promise<Record<string, unknown>> {
    const res = await this.tsnet.call(method, body);
    if (res.status !== 200) throw new Error(`${method}: HTTP ${res.status} ${res.raw}`);
    return res.body as Record<string, unknown>;
  }

  /** CreateNetwork as dockerd sends it for `--subnet a.b.c.0/24 --gateway a.b.c.1` and `-o` options. */
  async network(subnet24: string, options: Record<string, string> = {}, internal = false): Promise<HostNetwork> {
    const id = randomBytes(32).toString('hex');
    await this.call('NetworkDriver.CreateNetwork', {
      NetworkID: id,
      Options: { 'com.docker.network.generic': options, 'com.docker.network.internal': internal },
      IPv4Data: [{ AddressSpace: 'tsnet-local', Pool: `${subnet24}.0/24`, Gateway: `${subnet24}.1/24` }],
      IPv6Data: [],
    });
    return { id, bridge: options['com.docker.network.bridge.name'] ?? `tsbr-${id.slice(0, 10)}`, subnet24 };
  }

  /** CreateEndpoint + Join, then what dockerd does with the reply: move, rename, address, default route. */
  async container(net: HostNetwork, host: number): Promise<Container> {
    const endpointId = randomBytes(32).toString('hex');
    const ip = `${net.subnet24}.${host}`;
    const ns = await netns(`tsc${this.tag}-${this.seq++}-${process.pid}`);
    const c: Container = {
      ns,
      ip,
      endpointId,
      networkId: net.id,
      exec: async (cmd, args, timeoutMs = 15_000) => (await runOk('ip', ['netns', 'exec', ns, cmd, ...args], { timeoutMs })).stdout,
    };
    this.containers.push(c);
    await this.call('NetworkDriver.CreateEndpoint', { NetworkID: net.id, EndpointID: endpointId, Interface: { Address: `${ip}/24` }, Options: {} });
    const join = await this.call('NetworkDriver.Join', { NetworkID: net.id, EndpointID: endpointId, SandboxKey: `/run/netns/${ns}`, Options: {} });
    const src = (join.InterfaceName as { SrcName: string }).SrcName;
    await runOk('ip', ['-n', this.ns, 'link', 'set', src, 'netns', ns]);
    await runOk('ip', ['-n', ns, 'link', 'set', src, 'name', 'eth0']);
    await runOk('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await runOk('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    if (typeof join.Gateway === 'string' && join.Gateway !== '') await runOk('ip', ['-n', ns, 'route', 'add', 'default', 'via', join.Gateway]);
    return c;
  }

  /** ProgramExternalConnectivity for TCP `containerPort` on `hostIp:hostPort` ('' = every address). */
  async publish(c: Container, containerPort: number, hostPort: number, hostIp = ''): Promise<void> {
    await this.call('NetworkDriver.ProgramExternalConnectivity', {
      NetworkID: c.networkId,
      EndpointID: c.endpointId,
      Options: { 'com.docker.network.portmap': [{ Proto: 6, Port: containerPort, HostIP: hostIp, HostPort: hostPort }] },
    });
  }

  /** A TCP server in namespace `ns` answering `reply`; runs until destroy(). */
  async serve(ns: string, port: number, reply: string): Promise<void> {
    const child = spawnDaemon('ip', ['netns', 'exec', ns, process.execPath, '-e', tcpServerScript(port, reply)], { logFile: path.join(this.dir, `server-${port}.log`) });
    this.daemons.push(child);
    // Listening once `ss` in that namespace shows the port.
    for (let i = 0; i < 100; i++) {
      if ((await run('ip', ['netns', 'exec', ns, 'ss', '-ltnH', `sport = :${port}`])).stdout.includes(`:${port}`)) return;
      await sleep(50);
    }
    throw new Error(`TCP server on port ${port} in ${ns} did not start`);
  }

  /** What a TCP connection from namespace `ns` to host:port receives, or undefined when nothing answers. */
  tcp(ns: string, host: string, port: number): Promise<string | undefined> {
    return tcpFrom(ns, host, port);
  }

  /** One ping from namespace `ns`. */
  async ping(ns: string, ip: string): Promise<boolean> {
    // busybox's ping: the host may have no ping of its own.
    return (await run('ip', ['netns', 'exec', ns, '/bin/busybox', 'ping', '-c', '1', '-W', '1', ip], { timeoutMs: 10_000 })).code === 0;
  }

  /** Stops tsnet and servers, then deletes every namespace (the host one takes whatever is left in it); never throws. */
  async destroy(): Promise<void> {
    for (const d of this.daemons) await terminate(d, 2_000).catch(() => undefined);
    await this.proc?.stop().catch(() => undefined);
    for (const c of this.containers) await dropNetns(c.ns);
    for (const p of this.peers) await dropNetns(p.ns);
    await dropNetns(this.ns);
    if (process.env.TSNET_E2E_LOG_DIR) fs.cpSync(path.join(this.dir, 'tsnet.log'), path.join(process.env.TSNET_E2E_LOG_DIR, `hostns-${this.tag}-tsnet.log`), { force: true });
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
