import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { AdminClient } from '../admin/client';
import { DockerClient } from '../docker/client';
import { describeBriefly } from '../errors';
import { execFileInput } from '../kernel/exec';

/**
 * `tsnet doctor`: what tsnet needs of the host, each as one verdict with how to fix it. Works with the daemon down
 * (it says so); never changes the host: kernel features are probed by making links in a namespace of its own, which
 * it deletes again.
 */
export type Verdict = 'ok' | 'warn' | 'FAIL';

export interface Check {
  name: string;
  verdict: Verdict;
  detail: string;
  /** How to fix it (FAIL and warn). */
  fix?: string;
}

export interface DoctorTargets {
  pluginSocket: string;
  dockerSocket: string;
  adminSocket: string;
}

const ok = (name: string, detail: string): Check => ({ name, verdict: 'ok', detail });
const bad = (verdict: 'warn' | 'FAIL', name: string, detail: string, fix: string): Check => ({ name, verdict, detail, fix });

/** Every link kind tsnet makes, and how to make one in the probe namespace (the veth pair exists by then). */
const FEATURES: Array<{ name: string; module: string; args: string[] }> = [
  { name: 'bridge', module: 'bridge', args: ['link', 'add', 'dr0', 'type', 'bridge'] },
  { name: 'veth', module: 'veth', args: ['link', 'add', 'dv0', 'type', 'veth', 'peer', 'name', 'dv1'] },
  { name: 'dummy', module: 'dummy', args: ['link', 'add', 'dd0', 'type', 'dummy'] },
  { name: 'macvlan', module: 'macvlan', args: ['link', 'add', 'dm0', 'link', 'dv0', 'type', 'macvlan', 'mode', 'bridge'] },
  // Not on dv0: a link takes either macvlan or ipvlan children.
  { name: 'ipvlan', module: 'ipvlan', args: ['link', 'add', 'di0', 'link', 'dv1', 'type', 'ipvlan', 'mode', 'l2'] },
  { name: '8021q', module: '8021q', args: ['link', 'add', 'dq0', 'link', 'dv0', 'type', 'vlan', 'id', '7'] },
];

const firstLine = (text: string) => text.trim().split('\n')[0]?.slice(0, 160) ?? '';

/** Makes each kind of link in a fresh namespace with a per-run name, then deletes the namespace. */
export async function kernelFeatures(): Promise<Check[]> {
  const ns = `tsnetdoctor${randomBytes(4).toString('hex')}`;
  const made = await execFileInput('ip', ['netns', 'add', ns]).catch((err: unknown) => ({ code: -1, stdout: '', stderr: describeBriefly(err) }));
  if (made.code !== 0) {
    return [bad('FAIL', 'kernel features', `cannot make a probe network namespace: ${firstLine(made.stderr)}`, 'run tsnet doctor as root, with iproute2 installed')];
  }
  try {
    const checks: Check[] = [];
    for (const f of FEATURES) {
      const r = await execFileInput('ip', ['-n', ns, ...f.args]);
      checks.push(
        r.code === 0
          ? ok(`kernel: ${f.name}`, 'links can be made')
          : bad('FAIL', `kernel: ${f.name}`, firstLine(r.stderr), `modprobe ${f.module} (on Debian/Ubuntu cloud kernels: install linux-modules-extra-$(uname -r) or the stock kernel)`),
      );
    }
    return checks;
  } finally {
    await execFileInput('ip', ['netns', 'del', ns]);
  }
}

/** nftables works: a table is checked by the kernel without being committed (`nft --check`). */
export async function nftables(): Promise<Check> {
  const r = await execFileInput('nft', ['--check', 'add', 'table', 'inet', 'tsnetdoctor']).catch((err: unknown) => ({ code: -1, stdout: '', stderr: describeBriefly(err) }));
  return r.code === 0 ? ok('nftables', 'usable') : bad('FAIL', 'nftables', firstLine(r.stderr), 'install nftables (apt-get install nftables) and load nf_tables (modprobe nf_tables)');
}

function readProc(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

export function brNetfilter(): Check {
  const call = readProc('/proc/sys/net/bridge/bridge-nf-call-iptables');
  if (call === undefined) return ok('br_netfilter', 'not loaded: bridged frames skip iptables (tsnet does not need it)');
  return ok(
    'br_netfilter',
    call === '1'
      ? "loaded, bridge-nf-call-iptables=1: bridged frames cross iptables, where tsnet's DOCKER-USER rule accepts its traffic"
      : 'loaded, bridge-nf-call-iptables=0: bridged frames skip iptables',
  );
}

export function ipForward(): Check[] {
  return (['ipv4', 'ipv6'] as const).map((family) => {
    const file = family === 'ipv4' ? '/proc/sys/net/ipv4/ip_forward' : '/proc/sys/net/ipv6/conf/all/forwarding';
    const v = readProc(file);
    if (v === '1') return ok(`forwarding ${family}`, 'on');
    return bad('warn', `forwarding ${family}`, v === undefined ? `${file} missing` : 'off', 'tsnet turns it on when a network needs it (and guards it); or sysctl -w ' + file.slice('/proc/sys/'.length).replaceAll('/', '.') + '=1');
  });
}

/** dockerd answering, and which firewall backend it runs (its `/info`). */
export async function docker(socket: string): Promise<Check[]> {
  const client = new DockerClient({ socketPath: socket, timeoutMs: 5_000 });
  try {
    if (!(await client.ping())) return [bad('FAIL', 'Docker socket', `${socket}: /_ping did not answer OK`, 'start dockerd, or point --docker-socket at its socket')];
    await client.negotiate();
    const info = await client.info();
    return [ok('Docker socket', `${socket} answers /_ping`), ok('dockerd firewall', info.firewallBackend ?? 'iptables (dockerd before API 1.48 has no other)')];
  } catch (err) {
    return [bad('FAIL', 'Docker socket', `${socket}: ${describeBriefly(err, 160)}`, 'start dockerd, or point --docker-socket (DOCKER_HOST) at its socket')];
  }
}

/** The plugin socket answers dockerd's handshake naming both drivers. */
export function pluginSocket(socket: string): Promise<Check> {
  const fix = 'start tsnet (systemctl start tsnet), or point --socket at the socket it serves';
  return new Promise((resolve) => {
    const req = http.request({ socketPath: socket, method: 'POST', path: '/Plugin.Activate', timeout: 5_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8', 0, 4096);
        resolve(
          res.statusCode === 200 && text.includes('NetworkDriver')
            ? ok('plugin socket', `${socket} answers Plugin.Activate`)
            : bad('FAIL', 'plugin socket', `${socket}: Plugin.Activate answered HTTP ${res.statusCode ?? 0}`, fix),
        );
      });
    });
    req.on('timeout', () => req.destroy(new Error('no answer after 5 s')));
    req.on('error', (err) => resolve(bad('FAIL', 'plugin socket', `${socket}: ${err.message.slice(0, 160)} (the daemon is down?)`, fix)));
    req.end();
  });
}

export async function adminSocket(socket: string): Promise<Check> {
  try {
    const s = await new AdminClient(socket).status();
    if (!s.store.ok) return bad('FAIL', 'admin socket', `the daemon answers but its store fails: ${s.store.error}`, 'see the daemon log (journalctl -u tsnet)');
    return ok('admin socket', `the daemon is up (${s.version}, ${s.ready ? 'ready' : 'not ready'}, ${s.networks.length} networks, ${s.endpoints.length} endpoints)`);
  } catch (err) {
    return bad('FAIL', 'admin socket', describeBriefly(err, 200), 'start tsnet (systemctl start tsnet), or point --admin-socket at the socket it serves');
  }
}

/** Every check, in the order printed. */
export async function runChecks(t: DoctorTargets): Promise<Check[]> {
  return [...(await kernelFeatures()), await nftables(), brNetfilter(), ...ipForward(), ...(await docker(t.dockerSocket)), await pluginSocket(t.pluginSocket), await adminSocket(t.adminSocket)];
}
