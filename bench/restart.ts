/**
 * Restart bench (issue 10, item 9): how long a tsnet killed with -9 takes to answer its socket again and to be ready
 * (kernel reconciled), with N live endpoints as real veth pairs. No dockerd: the bench plays dockerd on the plugin
 * socket (IPAM RequestPool/RequestAddress, CreateNetwork, CreateEndpoint, Join) the way bench/run.ts (e) does, and
 * moves each container end into one namespace of its own, standing in for the sandboxes.
 *
 * Per N: one state is built once, then tsnet is killed -9 and started again REPS times per tree under test,
 * interleaved (tree A, tree B, tree A, ...) so both restart from the same kernel and store. Measured from tsnet's
 * log (winston timestamps) and the spawn: spawn → "tsnet listening" (the socket answers), "tsnet listening" →
 * "tsnet ready" (reconcile), and whether every endpoint's veth pair is still there afterwards.
 *
 *   node .tmp/bench/bench/restart.js
 *
 * Env: BENCH_RESTART_N (comma-separated endpoint counts, default 300,1000,3000), BENCH_RESTART_REPS (3),
 * BENCH_RESTART_LABEL (a suffix for the results' file names),
 * BENCH_RESTART_TREES (`label=path,...`, trees holding a built dist/main.js; default this repository as "this"),
 * BENCH_RESTART_PORTS (published ports on the first endpoints, default 20; host ports from 41000).
 * BENCH_RESTART_SANDBOX=host leaves the container ends in the host namespace (bench/run.ts (e)'s endpoints).
 * Results: bench/results/<date>-restart[-host-sandbox].{json,md}.
 *
 * Networks of at most 1,000 endpoints (a Linux bridge takes 1,023 ports) on 10.240.0.0/16, 10.241.0.0/16, ...;
 * everything the bench made (namespace, links, nft tables, the DOCKER-USER rule) is removed at the end and on failure.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isRunning, kill9, run, runOk, spawnDaemon, terminate, waitFor } from '../test/harness/exec';
import { forwardingOn, linksOwnedBy } from '../test/harness/host';
import { pluginCall } from '../test/harness/tsnet';
import { REPO, RESULTS_DIR } from './lib/config';
import { cmdOut } from './lib/host';
import { mdTable } from './lib/report';
import { median, r2 } from './lib/stats';

const SIZES = (process.env.BENCH_RESTART_N ?? '300,1000,3000').split(',').map((s) => {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_RESTART_N: ${s} is not a count`);
  return n;
});
const REPS = Number(process.env.BENCH_RESTART_REPS ?? 3);
const PORTS = Number(process.env.BENCH_RESTART_PORTS ?? 20);
/** `host`: container ends stay in the host namespace, as bench/run.ts (e) leaves them (Join with a dummy sandbox). */
const SANDBOX = process.env.BENCH_RESTART_SANDBOX === 'host' ? 'host' : 'netns';
const PER_NETWORK = 1000;
const FIRST_HOST_PORT = 41000;
type Tree = (typeof TREES)[number];
const TREES = (process.env.BENCH_RESTART_TREES ?? `this=${REPO}`).split(',').map((t) => {
  const [label, dir] = t.split('=');
  if (!label || !dir) throw new Error(`BENCH_RESTART_TREES: "${t}" is not label=path`);
  const main = path.resolve(REPO, dir, 'dist', 'main.js');
  if (!fs.existsSync(main)) throw new Error(`BENCH_RESTART_TREES: ${main} does not exist (build that tree first)`);
  // Trees from before the launcher (bin/tsnet) run as node dist/main.js, without its runtime flags.
  const launcher = path.resolve(REPO, dir, 'bin', 'tsnet');
  return { label, main, launcher: fs.existsSync(launcher) ? launcher : undefined };
});

const progress = (msg: string) => process.stderr.write(`[restart] ${msg}\n`);

interface Run {
  tree: string;
  n: number;
  /** spawn → "tsnet listening". */
  listeningMs: number;
  /** "tsnet listening" → "tsnet ready". */
  readyMs: number;
  /** The reconcileMs tsnet logged. */
  reconcileMs: number;
  /** Endpoints whose host veth was gone after the restart (must be 0). */
  lostVeths: number;
  /** ip/nft runs tsnet logged (debug) between listening and ready. */
  kernelCalls: number;
}

/** One tsnet on a socket no dockerd looks at, its own table, state dir and log. */
class Tsnet {
  readonly name = `tsrst${randomBytes(3).toString('hex')}`;
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-restart-'));
  readonly socket = path.join(this.dir, 'tsnet.sock');
  readonly logFile = path.join(this.dir, 'tsnet.log');
  private child: ChildProcess | undefined;

  async start(tree: Tree): Promise<{ spawnedAt: number; logFrom: number }> {
    const logFrom = fs.existsSync(this.logFile) ? fs.statSync(this.logFile).size : 0;
    const args = ['--socket', this.socket, '--state-dir', path.join(this.dir, 'state'), '--log-level', 'debug', '--nft-table', this.name, '--dns-listen', 'none'];
    const spawnedAt = Date.now();
    const [cmd, argv] = tree.launcher ? [tree.launcher, args] : [process.execPath, [tree.main, ...args]];
    const child = spawnDaemon(cmd, argv, { logFile: this.logFile, env: { ...process.env, TSNET_NODE: process.execPath }, cwd: path.dirname(path.dirname(tree.main)) });
    this.child = child;
    const probe = { NetworkID: '0'.repeat(64), EndpointID: '0'.repeat(64) };
    await waitFor(
      async () => {
        if (!isRunning(child)) throw new Error(`tsnet exited during start:\n${this.logSince(logFrom).slice(-2000)}`);
        if (!fs.existsSync(this.socket)) return false;
        return (await pluginCall(this.socket, 'NetworkDriver.EndpointOperInfo', probe, 120_000).catch(() => undefined))?.status === 200;
      },
      180_000,
      () => `tsnet not ready after 180 s`,
    );
    return { spawnedAt, logFrom };
  }

  async kill9(): Promise<void> {
    if (this.child) await kill9(this.child);
    this.child = undefined;
  }

  async stop(): Promise<void> {
    if (this.child) await terminate(this.child, 20_000);
    this.child = undefined;
  }

  logSince(from: number): string {
    const fd = fs.openSync(this.logFile, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const buf = Buffer.alloc(size - from);
      fs.readSync(fd, buf, 0, buf.length, from);
      return buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  }

  async call(method: string, body: unknown): Promise<unknown> {
    const r = await pluginCall(this.socket, method, body, 60_000);
    if (r.status !== 200) throw new Error(`${method}: HTTP ${r.status}: ${r.raw.slice(0, 300)}`);
    return r.body;
  }
}

interface LogLine {
  message?: string;
  timestamp?: string;
  reconcileMs?: number;
  sinceStartMs?: number;
}

function parseLog(text: string): LogLine[] {
  return text.split('\n').flatMap((l) => {
    if (!l.startsWith('{')) return [];
    try {
      return [JSON.parse(l) as LogLine];
    } catch {
      return [];
    }
  });
}

/** Builds the state: networks, N endpoints (joined, container ends in `netns`), PORTS published ports. */
async function build(t: Tsnet, n: number, netns: string): Promise<{ networks: string[] }> {
  const networks: string[] = [];
  for (let k = 0; k * PER_NETWORK < n; k++) {
    const subnet = `10.${240 + k}.0.0/16`;
    const pool = (await t.call('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: subnet, SubPool: '', Options: {}, V6: false })) as { PoolID: string };
    const gw = (await t.call('IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } })) as { Address: string };
    const id = randomBytes(32).toString('hex');
    await t.call('NetworkDriver.CreateNetwork', {
      NetworkID: id,
      Options: { 'com.docker.network.generic': {}, 'com.docker.network.enable_ipv6': false },
      IPv4Data: [{ AddressSpace: 'tsnet-local', Pool: subnet, Gateway: gw.Address, AuxAddresses: {} }],
      IPv6Data: [],
    });
    networks.push(id);
    const count = Math.min(PER_NETWORK, n - k * PER_NETWORK);
    const moves: string[] = [];
    for (let i = 0; i < count; i++) {
      const ep = randomBytes(32).toString('hex');
      const a = (await t.call('IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: '', Options: {} })) as { Address: string };
      await t.call('NetworkDriver.CreateEndpoint', { NetworkID: id, EndpointID: ep, Interface: { Address: a.Address, AddressIPv6: '', MacAddress: '' }, Options: {} });
      const join = (await t.call('NetworkDriver.Join', { NetworkID: id, EndpointID: ep, SandboxKey: `/var/run/docker/netns/${netns}`, Options: {} })) as { InterfaceName: { SrcName: string } };
      moves.push(`link set dev ${join.InterfaceName.SrcName} netns ${netns}`);
      const published = networks.length === 1 && i < PORTS;
      if (published) {
        const port = FIRST_HOST_PORT + i;
        await t.call('NetworkDriver.ProgramExternalConnectivity', {
          NetworkID: id,
          EndpointID: ep,
          Options: { 'com.docker.network.portmap': [{ Proto: 6, IP: '', Port: 80, HostIP: '', HostPort: port, HostPortEnd: port }] },
        });
      }
      if ((i + 1) % 250 === 0) progress(`N=${n}: network ${k + 1}, ${i + 1}/${count} endpoints`);
    }
    // dockerd moves each container end into its sandbox; one batch here.
    if (SANDBOX === 'netns') await runOk('ip', ['-batch', '-'], { input: moves.join('\n') + '\n', timeoutMs: 300_000 });
  }
  return { networks };
}

/** Host veths of the endpoints still present (with this tsnet's owner tag). */
async function hostVeths(t: Tsnet): Promise<number> {
  return (await linksOwnedBy(`tsnet:${t.name}`, 'tsv')).length;
}

async function measure(t: Tsnet, tree: Tree, n: number): Promise<Run> {
  await t.kill9();
  const { spawnedAt, logFrom } = await t.start(tree);
  const lines = parseLog(t.logSince(logFrom));
  const at = (msg: string) => {
    const l = lines.find((x) => x.message === msg);
    if (!l?.timestamp) throw new Error(`no "${msg}" line in the log`);
    return { ms: Date.parse(l.timestamp), line: l };
  };
  const logged = at('tsnet listening');
  // tsnet logs "listening" once its log is loaded, after the socket listened; the line says when that was.
  const listening = { ms: typeof logged.line.sinceStartMs === 'number' ? spawnedAt + logged.line.sinceStartMs : logged.ms };
  const ready = at('tsnet ready');
  const between = lines.filter((l) => l.timestamp && Date.parse(l.timestamp) >= listening.ms && Date.parse(l.timestamp) <= ready.ms);
  const kernelCalls = between.filter((l) => l.message === 'kernel change' || l.message === 'firewall change').length;
  return {
    tree: tree.label,
    n,
    listeningMs: listening.ms - spawnedAt,
    readyMs: ready.ms - listening.ms,
    reconcileMs: ready.line.reconcileMs ?? NaN,
    lostVeths: n - (await hostVeths(t)),
    kernelCalls,
  };
}

/** Removes what the bench made, whatever state it is in; problems are collected, not thrown one by one. */
async function tearDown(t: Tsnet, netns: string, networks: string[], restoreForwarding: () => void): Promise<string[]> {
  const problems: string[] = [];
  const step = async (what: string, fn: () => Promise<unknown>) => {
    await fn().catch((err: unknown) => problems.push(`${what}: ${err instanceof Error ? err.message : String(err)}`));
  };
  // The namespace takes every container end, and so every pair, in one batched unregistration.
  await step('delete namespace', () => run('ip', ['netns', 'del', netns]));
  await step('delete networks', async () => {
    if (!fs.existsSync(t.socket)) return;
    for (const id of networks) await t.call('NetworkDriver.DeleteNetwork', { NetworkID: id });
  });
  await step('stop tsnet', () => t.stop());
  await step('sweep links', async () => {
    for (const l of await linksOwnedBy(`tsnet:${t.name}`)) await run('ip', ['link', 'del', l]);
  });
  await step('sweep nft', async () => {
    for (const family of ['inet', 'bridge']) if ((await run('nft', ['list', 'table', family, t.name])).code === 0) await run('nft', ['delete', 'table', family, t.name]);
  });
  await step('sweep DOCKER-USER', async () => {
    for (const bin of ['iptables', 'ip6tables']) {
      const rules = (await run(bin, ['-w', '-S', 'DOCKER-USER'])).stdout.split('\n').filter((r) => r.includes(`--comment ${t.name} `));
      for (const r of rules) await run(bin, ['-w', ...r.replace(/^-A /, '-D ').split(' ')]);
    }
  });
  restoreForwarding();
  fs.rmSync(t.dir, { recursive: true, force: true });
  return problems;
}

async function benchSize(n: number): Promise<Run[]> {
  const t = new Tsnet();
  const netns = `tsrb${randomBytes(3).toString('hex')}`;
  const restoreForwarding = forwardingOn();
  let networks: string[] = [];
  const runs: Run[] = [];
  try {
    await runOk('ip', ['netns', 'add', netns]);
    await t.start(TREES[0]);
    const t0 = performance.now();
    networks = (await build(t, n, netns)).networks;
    progress(`N=${n}: built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    for (let rep = 0; rep < REPS; rep++) {
      for (const tree of TREES) {
        const r = await measure(t, tree, n);
        progress(`N=${n} ${tree.label} #${rep + 1}: listening ${r.listeningMs} ms, ready ${r.readyMs} ms, lost veths ${r.lostVeths}, kernel calls ${r.kernelCalls}`);
        runs.push(r);
      }
    }
  } finally {
    const problems = await tearDown(t, netns, networks, restoreForwarding);
    if (problems.length > 0) progress(`teardown problems:\n  ${problems.join('\n  ')}`);
  }
  return runs;
}

function report(runs: Run[], facts: Record<string, unknown>): string {
  const rows = [['N', 'tree', 'spawn → listening (ms, median)', 'listening → ready (ms, median)', 'reconcileMs (median)', 'changes logged in reconcile (ip, nft, sysctl; median)', 'lost veths', 'runs']];
  for (const n of SIZES) {
    for (const tree of TREES) {
      const rs = runs.filter((r) => r.n === n && r.tree === tree.label);
      if (rs.length === 0) continue;
      rows.push([
        String(n),
        tree.label,
        String(r2(median(rs.map((r) => r.listeningMs)))),
        String(r2(median(rs.map((r) => r.readyMs)))),
        String(r2(median(rs.map((r) => r.reconcileMs)))),
        String(median(rs.map((r) => r.kernelCalls))),
        String(Math.max(...rs.map((r) => r.lostVeths))),
        String(rs.length),
      ]);
    }
  }
  return [
    '# tsnet restart bench (kill -9, restart, reconcile)',
    '',
    `Host ${String(facts.hostname)}, ${String(facts.nproc)} CPUs, kernel ${String(facts.kernel)}, ${String(facts.date)}; ${REPS} restarts per tree and N, interleaved.`,
    `Endpoints joined, container ends ${SANDBOX === 'host' ? 'left in the host namespace (a Join with a dummy sandbox, as bench/run.ts (e) makes them)' : 'moved into one namespace (the sandboxes)'}; ${PORTS} published ports on the first network.`,
    'Targets: listening ≤ 200 ms, ready ≤ 1,000 ms at 1,000 endpoints, ≤ 5,000 ms at 10,000.',
    '',
    mdTable(rows),
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const facts = {
    sandbox: SANDBOX,
    hostname: os.hostname(),
    nproc: os.cpus().length,
    kernel: os.release(),
    date: new Date().toISOString(),
    trees: TREES.map((t) => t.label),
    commit: await cmdOut('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']),
  };
  const runs: Run[] = [];
  for (const n of SIZES) runs.push(...(await benchSize(n)));
  const md = report(runs, facts);
  const label = process.env.BENCH_RESTART_LABEL ? `-${process.env.BENCH_RESTART_LABEL}` : '';
  const base = path.join(RESULTS_DIR, `${facts.date.slice(0, 10)}-restart${SANDBOX === 'host' ? '-host-sandbox' : ''}${label}`);
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  fs.writeFileSync(`${base}.json`, JSON.stringify({ facts, runs }, null, 2) + '\n');
  fs.writeFileSync(`${base}.md`, md);
  process.stdout.write(md);
}

main().catch((err: unknown) => {
  process.stderr.write(`restart bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
