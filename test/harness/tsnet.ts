/**
 * The tsnet process under test, its plugin socket, and {@link setupE2E}: dockerd + busybox image + tsnet for a jest suite.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { ensureBusyboxImage } from './busybox';
import { Docker, Dockerd, DockerdOptions, startDockerd } from './dockerd';
import { fileTail, isRunning, kill9, onProcessExit, patient, run, runOk, spawnDaemon, terminate, waitFor } from './exec';
import { forwardingOn, linksOwnedBy, PLUGIN_DIR } from './host';

/** Root of the tsnet repository (holds src/, dist/, tsconfig.json). */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');
const MAIN_JS = path.join(REPO_ROOT, 'dist', 'main.js');
/** tsnet is started as operators start it: through its launcher (the runtime's flags), on this test's node. */
const LAUNCHER = path.join(REPO_ROOT, 'bin', 'tsnet');

function newestMtimeMs(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtimeMs(p) : fs.statSync(p).mtimeMs);
  }
  return newest;
}

let built: Promise<void> | undefined;

/**
 * Compiles src/ into dist/ (`tsc -p tsconfig.json`) if dist/main.js is missing or older than any file in src/
 * or tsconfig.json. Runs at most once per process; a failed build rejects with tsc's output.
 */
export function ensureBuilt(): Promise<void> {
  built ??= (async () => {
    const stale =
      !fs.existsSync(MAIN_JS) ||
      fs.statSync(MAIN_JS).mtimeMs < Math.max(newestMtimeMs(path.join(REPO_ROOT, 'src')), fs.statSync(path.join(REPO_ROOT, 'tsconfig.json')).mtimeMs);
    if (stale) {
      // tsc under the node running the tests, not whichever `node` its #! line finds on PATH.
      await runOk(process.execPath, [path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], {
        cwd: REPO_ROOT,
        timeoutMs: patient(180_000),
      });
    }
  })();
  return built;
}

/** A fresh driver name per test run (`tsnete2e` + 6 hex digits), so runs never share a plugin socket. */
export function uniquePluginName(): string {
  return `tsnete2e${randomBytes(3).toString('hex')}`;
}

/** `/run/docker/plugins/<name>.sock`: the only place dockerd discovers legacy plugins, whatever its exec-root. */
export function pluginSocketPath(name: string): string {
  return path.join(PLUGIN_DIR, `${name}.sock`);
}

/** A plugin API answer: `body` is the parsed JSON, or undefined when `raw` is not JSON. */
export interface PluginResponse {
  status: number;
  body: unknown;
  raw: string;
}

/**
 * POSTs to `/<method>` (e.g. `NetworkDriver.CreateNetwork`) on a plugin's unix socket the way dockerd does:
 * no Content-Type, dockerd's Accept header. A string `body` is sent verbatim, anything else as JSON. `agent` (a
 * keep-alive one) saves a connection per call where many calls are made.
 */
export function pluginCall(socketPath: string, method: string, body: unknown, timeoutMs = 10_000, agent: http.Agent | false = false): Promise<PluginResponse> {
  const payload = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body), 'utf8');
  return new Promise<PluginResponse>((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        method: 'POST',
        path: `/${method.replace(/^\//, '')}`,
        agent,
        timeout: timeoutMs,
        headers: { Accept: 'application/vnd.docker.plugins.v1.2+json', 'Content-Length': payload.length },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const raw = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = JSON.parse(raw);
          } catch {
            parsed = undefined;
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, raw });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} on ${socketPath}: no answer after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

export interface TsnetOptions {
  /** Driver name; the socket is {@link pluginSocketPath}(name). */
  name: string;
  stateDir: string;
  /** stdout and stderr are appended here (across restarts). */
  logFile: string;
  /** Appended after `--socket --state-dir --log-level debug`. */
  extraArgs?: string[];
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv;
  /** How long `start()` waits for Plugin.Activate to answer 200; default 15 s. */
  readyTimeoutMs?: number;
  /** Socket path instead of {@link pluginSocketPath}(name) (a tsnet no dockerd is meant to find). */
  socket?: string;
  /** Runs tsnet inside this named network namespace (`ip netns exec`), which then stands in for the host. */
  netns?: string;
  /** Admin socket instead of `<stateDir>/admin.sock` (never the host's `/run/tsnet/admin.sock`). */
  adminSocket?: string;
}

/** Grace between SIGTERM and SIGKILL when stopping tsnet. */
const STOP_GRACE_MS = patient(10_000);

/** A tsnet process that can be stopped, crashed and started again on the same state dir and socket. */
export class TsnetProcess {
  readonly name: string;
  readonly socket: string;
  /** The `tsnet` CLI's socket, in the state dir: parallel suites never share one. */
  readonly adminSocket: string;
  private child: ChildProcess | undefined;

  /** One mark bit from 0x100-0x8000, chosen by the name. */
  readonly fwMark: number;

  constructor(private readonly opts: TsnetOptions) {
    this.name = opts.name;
    this.socket = opts.socket ?? pluginSocketPath(opts.name);
    this.adminSocket = opts.adminSocket ?? path.join(opts.stateDir, 'admin.sock');
    this.fwMark = 1 << (8 + (Array.from(opts.name, (c) => c.charCodeAt(0)).reduce((h, c) => h + c, 0) % 8));
  }

  /** Pid while running, undefined otherwise. */
  get pid(): number | undefined {
    return this.child && isRunning(this.child) ? this.child.pid : undefined;
  }

  /** Spawns `bin/tsnet …` and waits until it answers the handshake and has reconciled the kernel. */
  async start(): Promise<void> {
    if (this.pid !== undefined) throw new Error(`tsnet ${this.name} already running (pid ${this.pid})`);
    fs.mkdirSync(this.opts.stateDir, { recursive: true });
    // Its own nftables table (named like the plugin) and mark bit, so a test's tsnet and its DOCKER-USER rule never
    // stand in for another tsnet's on the same host.
    const args = ['--socket', this.socket, '--state-dir', this.opts.stateDir, '--log-level', 'debug', '--nft-table', this.name, '--fw-mark', `0x${this.fwMark.toString(16)}`, ...(this.opts.extraArgs ?? [])];
    // `ip netns exec` and the launcher exec in place, so the child is tsnet itself (signals reach it directly).
    // A bench of a tree from before the launcher runs its dist/main.js with node (bench/lib/config.ts).
    // The admin socket goes by env (TSNET_ADMIN_SOCKET, below): a bench's older tree ignores it, a flag it refuses.
    const start = fs.existsSync(LAUNCHER) ? [LAUNCHER, ...args] : [process.execPath, MAIN_JS, ...args];
    const [cmd, argv] = this.opts.netns ? ['ip', ['netns', 'exec', this.opts.netns, ...start]] : [start[0], start.slice(1)];
    const child = spawnDaemon(cmd, argv, { logFile: this.opts.logFile, env: { ...process.env, TSNET_NODE: process.execPath, TSNET_ADMIN_SOCKET: this.adminSocket, ...this.opts.env }, cwd: REPO_ROOT });
    this.child = child;
    const timeoutMs = this.opts.readyTimeoutMs ?? patient(15_000);
    try {
      await waitFor(
        async () => {
          if (!isRunning(child)) throw new Error(`tsnet exited (code ${child.exitCode}, signal ${child.signalCode}) during start`);
          if (!fs.existsSync(this.socket)) return false;
          try {
            if ((await pluginCall(this.socket, 'Plugin.Activate', {}, 2_000)).status !== 200) return false;
            // The handshake answers at once; calls needing state wait until the kernel is reconciled. An
            // EndpointOperInfo for an unknown endpoint is such a call with no effect: its answer means ready.
            const probe = { NetworkID: '0'.repeat(64), EndpointID: '0'.repeat(64) };
            return (await pluginCall(this.socket, 'NetworkDriver.EndpointOperInfo', probe, timeoutMs)).status === 200;
          } catch {
            return false;
          }
        },
        timeoutMs,
        () => `tsnet not ready on ${this.socket} after ${timeoutMs} ms`,
      );
    } catch (e) {
      await terminate(child, 2_000);
      throw new Error(`${(e as Error).message}\n--- ${this.opts.logFile} ---\n${this.logTail()}`);
    }
  }

  /** SIGTERM, wait ≤10 s, then SIGKILL. Rejects if SIGKILL was needed (a graceful shutdown is part of the contract). */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child && (await terminate(child, STOP_GRACE_MS)) === 'killed') {
      throw new Error(`tsnet ${this.name} ignored SIGTERM for ${STOP_GRACE_MS} ms and was SIGKILLed\n${this.logTail()}`);
    }
  }

  /** Crash simulation: SIGKILL and wait for the exit (the socket file and state stay as they are). */
  async kill9(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child) await kill9(child);
  }

  /**
   * Runs `fn` with tsnet frozen (SIGSTOP, SIGCONT after): a control that breaks tsnet's rules on purpose sees the
   * broken state, not tsnet's drift repair undoing it within milliseconds. The repair runs once tsnet thaws.
   */
  async frozen<T>(fn: () => Promise<T>): Promise<T> {
    const pid = this.pid;
    if (pid === undefined) throw new Error(`tsnet ${this.name} is not running`);
    process.kill(pid, 'SIGSTOP');
    try {
      return await fn();
    } finally {
      process.kill(pid, 'SIGCONT');
    }
  }

  /** `stop()` then `start()`. */
  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** {@link pluginCall} on this process's socket. */
  call(method: string, body: unknown): Promise<PluginResponse> {
    return pluginCall(this.socket, method, body);
  }

  logTail(lines = 40): string {
    return fileTail(this.opts.logFile, lines);
  }
}

/** Builds dist/ if needed, then creates and starts a {@link TsnetProcess}. */
export async function startTsnet(opts: TsnetOptions): Promise<TsnetProcess> {
  await ensureBuilt();
  const t = new TsnetProcess(opts);
  await t.start();
  return t;
}

// ---- jest suite environment ----

export interface E2EOptions {
  /** dockerd options; `iptables` defaults to true. */
  dockerd?: DockerdOptions;
  /** Start tsnet (default true). */
  tsnet?: boolean;
  /**
   * Extra tsnet arguments, e.g. `['--default-address-pool', 'base=10.99.0.0/16,size=24']`; a function gets the
   * started dockerd (for `--docker-socket`).
   */
  tsnetArgs?: string[] | ((dockerd: Dockerd) => string[]);
  tsnetEnv?: NodeJS.ProcessEnv;
  /** jest timeout of the beforeAll and afterAll hooks; default 120 s. */
  hookTimeoutMs?: number;
}

/** What {@link setupE2E} provides to tests; reading a field before beforeAll has set it throws. */
export interface E2EEnv {
  readonly dockerd: Dockerd;
  readonly docker: Docker;
  readonly tsnet: TsnetProcess;
  /** Driver and IPAM name for `docker network create -d NAME --ipam-driver NAME`. */
  readonly name: string;
}

class E2EContext implements E2EEnv {
  readonly name = uniquePluginName();
  private dockerdValue: Dockerd | undefined;
  private tsnetValue: TsnetProcess | undefined;
  private unregisterSocketCleanup: (() => void) | undefined;
  private restoreForwarding: (() => void) | undefined;

  constructor(private readonly opts: E2EOptions) {}

  get dockerd(): Dockerd {
    if (!this.dockerdValue) throw new Error('setupE2E: dockerd is not started (beforeAll failed or has not run)');
    return this.dockerdValue;
  }

  get docker(): Docker {
    return this.dockerd.docker;
  }

  get tsnet(): TsnetProcess {
    if (!this.tsnetValue) throw new Error('setupE2E: tsnet is not started (beforeAll failed, has not run, or tsnet: false)');
    return this.tsnetValue;
  }

  async setUp(): Promise<void> {
    const wantTsnet = this.opts.tsnet ?? true;
    if (wantTsnet) await ensureBuilt();
    this.restoreForwarding = forwardingOn();
    const dockerd = await startDockerd({ iptables: true, ...this.opts.dockerd });
    this.dockerdValue = dockerd;
    await ensureBusyboxImage(dockerd.docker);
    if (wantTsnet) {
      const dir = path.join(dockerd.dir, 'tsnet');
      const args = this.opts.tsnetArgs;
      this.tsnetValue = new TsnetProcess({
        name: this.name,
        stateDir: path.join(dir, 'state'),
        logFile: path.join(dir, 'tsnet.log'),
        extraArgs: typeof args === 'function' ? args(dockerd) : args,
        env: this.opts.tsnetEnv,
      });
      const socket = this.tsnetValue.socket;
      this.unregisterSocketCleanup = onProcessExit(() => fs.rmSync(socket, { force: true }));
      await this.tsnetValue.start();
    }
  }

  /** Every step runs even if an earlier one failed; the errors are reported together at the end. */
  async tearDown(): Promise<void> {
    const errors: Error[] = [];
    const step = async (what: string, fn: () => Promise<void> | void): Promise<void> => {
      try {
        await fn();
      } catch (e) {
        errors.push(new Error(`${what}: ${(e as Error).message}`));
      }
    };
    const d = this.dockerdValue;
    const t = this.tsnetValue;
    if (d?.pid !== undefined) {
      await step('remove containers', () => d.docker.removeAllContainers());
      await step('remove networks', () => d.docker.removeCustomNetworks());
    }
    if (t) {
      await step('stop tsnet', () => t.stop());
      await step('remove plugin socket', () => fs.rmSync(t.socket, { force: true }));
      // With every network removed, a stopped tsnet must have taken its links, table and DOCKER-USER/FORWARD rules along.
      await step('tsnet left nothing behind', () => removeLeftovers(t));
    }
    if (d) {
      await step('keep logs', () => keepLogs(d.dir, this.name));
      await step('destroy dockerd', () => d.destroy());
    }
    const restore = this.restoreForwarding;
    if (restore) await step('restore forwarding sysctls', restore);
    this.restoreForwarding = undefined;
    this.unregisterSocketCleanup?.();
    this.tsnetValue = undefined;
    this.dockerdValue = undefined;
    if (errors.length > 0) throw new AggregateError(errors, `e2e teardown failed:\n${errors.map((e) => e.message).join('\n')}`);
  }
}

/** Fails (after cleaning up) if the stopped tsnet's links, nftables tables (inet, bridge) or DOCKER-USER rule are still there. */
export async function removeLeftovers(t: Pick<TsnetProcess, 'name'>): Promise<void> {
  const left: string[] = [];
  for (const link of await linksOwnedBy(`tsnet:${t.name}`)) {
    left.push(`link ${link}`);
    await run('ip', ['link', 'del', link]);
  }
  for (const family of ['inet', 'bridge']) {
    if ((await run('nft', ['list', 'table', family, t.name])).code === 0) {
      left.push(`nft table ${family} ${t.name}`);
      await run('nft', ['delete', 'table', family, t.name]);
    }
  }
  for (const bin of ['iptables', 'ip6tables']) {
    for (const chain of ['DOCKER-USER', 'FORWARD']) {
      const rules = (await run(bin, ['-w', '-S', chain])).stdout.split('\n').filter((r) => r.includes(`--comment ${t.name} `));
      for (const r of rules) {
        left.push(`${bin} ${r}`);
        await run(bin, ['-w', ...r.replace(/^-A /, '-D ').split(' ')]);
      }
    }
  }
  if (left.length > 0) throw new Error(`left behind: ${left.join('; ')}`);
}

/** If TSNET_E2E_LOG_DIR is set, copies dockerd.log and tsnet.log there (under the run's name) before the temp dir goes. */
function keepLogs(dir: string, name: string): void {
  const target = process.env.TSNET_E2E_LOG_DIR;
  if (!target) return;
  const out = path.join(target, name);
  fs.mkdirSync(out, { recursive: true });
  for (const log of ['dockerd.log', path.join('tsnet', 'tsnet.log')]) {
    const src = path.join(dir, log);
    if (fs.existsSync(src)) fs.copyFileSync(src, path.join(out, path.basename(log)));
  }
}

/**
 * Registers beforeAll (build, dockerd, busybox image, tsnet) and afterAll (containers, networks, tsnet, dockerd —
 * always all of them, even after a failed beforeAll) in the calling `describe`. Use inside {@link describeE2E}.
 */
export function setupE2E(opts: E2EOptions = {}): E2EEnv {
  const ctx = new E2EContext(opts);
  const timeout = opts.hookTimeoutMs ?? patient(120_000);
  beforeAll(() => ctx.setUp(), timeout);
  afterAll(() => ctx.tearDown(), timeout);
  return ctx;
}
