/**
 * A private dockerd per test suite: own data-root, exec-root and socket under one temp dir, never the host's daemon.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileTail, isRunning, kill9, onProcessExit, patient, run, RunOptions, RunResult, runOk, runPipeOk, runSync, SLOWDOWN, spawnDaemon, terminate, waitFor } from './exec';
import { isLiveProcess, mountsUnder, pidsInCgroupsNamed, pidsReferencing } from './host';

/** Default per-command timeout of the docker CLI; `docker run` of a short command takes well under this. */
const DOCKER_TIMEOUT_MS = patient(60_000);

const BUILTIN_NETWORKS = new Set(['bridge', 'host', 'none']);

/** Every temp dir of the harness starts so; `mount | grep tsnet-e2e` shows what a run still holds. */
export const TEMP_PREFIX = '/tmp/tsnet-e2e-';
/** Pid of the test process that created a temp dir; a dir whose owner is gone is a crashed run's leftover. */
const OWNER_FILE = 'owner.pid';
/** A dir without an owner file older than this is a leftover too (crash between mkdtemp and writing the file). */
const UNOWNED_GRACE_MS = 10 * 60_000;

/** The docker CLI bound to one daemon socket (always `-H unix://…`, never DOCKER_HOST or the default daemon). */
/**
 * The CLI shipped with the daemon (Debian's docker.io) when present: a newer CLI found first on PATH sends options the
 * 20.10 daemon's API refuses (e.g. per-network --mac-address needs API 1.44).
 */
const DOCKER_CLI = fs.existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

export class Docker {
  private readonly env: NodeJS.ProcessEnv;

  /**
   * @param socket path of the daemon's unix socket
   * @param configDir a private DOCKER_CONFIG, so the CLI neither reads nor writes ~/.docker
   */
  constructor(
    readonly socket: string,
    configDir: string,
  ) {
    const env: NodeJS.ProcessEnv = { ...process.env, DOCKER_CONFIG: configDir, DOCKER_CLI_HINTS: 'false' };
    delete env.DOCKER_HOST;
    delete env.DOCKER_CONTEXT;
    delete env.DOCKER_TLS_VERIFY;
    this.env = env;
  }

  private argv(args: readonly string[]): string[] {
    return ['-H', `unix://${this.socket}`, ...args];
  }

  /** Runs `docker args`; resolves with the exit code and output whatever the code. */
  dockerTry(args: readonly string[], opts: Omit<RunOptions, 'env'> = {}): Promise<RunResult> {
    return run(DOCKER_CLI, this.argv(args), { timeoutMs: DOCKER_TIMEOUT_MS, ...opts, env: this.env });
  }

  /** Runs `docker args` and resolves with trimmed stdout; rejects on a non-zero exit with stderr in the message. */
  async docker(args: readonly string[], opts: Omit<RunOptions, 'env'> = {}): Promise<string> {
    const r = await runOk(DOCKER_CLI, this.argv(args), { timeoutMs: DOCKER_TIMEOUT_MS, ...opts, env: this.env });
    return r.stdout.trim();
  }

  /** Runs `producer | docker args` (no shell), e.g. `tar … | docker import -`; resolves with trimmed stdout. */
  async dockerPiped(producer: { cmd: string; args: readonly string[] }, args: readonly string[], opts: Omit<RunOptions, 'env' | 'input'> = {}): Promise<string> {
    const r = await runPipeOk(producer, { cmd: DOCKER_CLI, args: this.argv(args) }, { timeoutMs: DOCKER_TIMEOUT_MS, ...opts, env: this.env });
    return r.stdout.trim();
  }

  /** `docker rm -f` every container, running or not. */
  async removeAllContainers(): Promise<void> {
    const ids = (await this.docker(['ps', '-aq'])).split('\n').filter((s) => s !== '');
    if (ids.length > 0) await this.docker(['rm', '-f', ...ids]);
  }

  /** `docker network rm` every network but dockerd's built-in ones (the driver under test must be up to delete them). */
  async removeCustomNetworks(): Promise<void> {
    const names = (await this.docker(['network', 'ls', '--format', '{{.Name}}']))
      .split('\n')
      .filter((n) => n !== '' && !BUILTIN_NETWORKS.has(n));
    if (names.length > 0) await this.docker(['network', 'rm', ...names]);
  }
}

export interface DockerdOptions {
  /** `--iptables`; default true, as in production. */
  iptables?: boolean;
  /** `--ip-forward`; dockerd's default when omitted. */
  ipForward?: boolean;
  /** Appended to dockerd's arguments. */
  extraArgs?: string[];
  /** How long `start()` waits for the API to answer; default 20 s. */
  readyTimeoutMs?: number;
  /** Runs dockerd in this named network namespace (only the network: mounts and /run stay the host's), a second host. */
  netns?: string;
  /**
   * Start containerd here and point dockerd at it, instead of letting dockerd start its own: dockerd gives that one
   * 15 s to come up, which an emulated CPU can exceed. Default: on a slow host ({@link SLOWDOWN}).
   */
  ownContainerd?: boolean;
}

/**
 * Grace between SIGTERM and SIGKILL when stopping dockerd. dockerd stops each running container with its own
 * stop timeout (10 s unless `docker run --stop-timeout`), and busybox as pid 1 ignores SIGTERM, so this must exceed it.
 */
const STOP_GRACE_MS = patient(15_000);

/**
 * One dockerd and its temp dir. `start()`/`stop()` may alternate (a restart keeps the data-root);
 * `destroy()` stops it and removes every trace: processes, mounts, the temp dir.
 */
export class Dockerd {
  /** The temp dir everything lives in (`/tmp/tsnet-e2e-XXXXXX`). */
  readonly dir: string;
  readonly socket: string;
  readonly dataRoot: string;
  readonly execRoot: string;
  readonly pidFile: string;
  readonly logFile: string;
  /** CLI bound to this daemon. */
  readonly docker: Docker;
  private child: ChildProcess | undefined;
  private containerd: ChildProcess | undefined;
  private readonly unregisterExitHook: () => void;

  constructor(private readonly opts: DockerdOptions = {}) {
    sweepStaleDirs();
    this.dir = fs.mkdtempSync(TEMP_PREFIX);
    fs.writeFileSync(path.join(this.dir, OWNER_FILE), `${process.pid}\n`);
    this.socket = path.join(this.dir, 'd.sock');
    this.dataRoot = dataRootOf(this.dir);
    this.execRoot = path.join(this.dir, 'exec');
    this.pidFile = path.join(this.dir, 'd.pid');
    this.logFile = path.join(this.dir, 'dockerd.log');
    this.docker = new Docker(this.socket, path.join(this.dir, 'cli'));
    // Runs after exec's exit handler has SIGKILLed dockerd itself.
    this.unregisterExitHook = onProcessExit(() => removeDockerdDir(this.dir));
  }

  /** Pid of the running dockerd, undefined when stopped. */
  get pid(): number | undefined {
    return this.child && isRunning(this.child) ? this.child.pid : undefined;
  }

  private args(): string[] {
    const o = this.opts;
    const args = [
      `--data-root=${this.dataRoot}`,
      `--exec-root=${this.execRoot}`,
      `--host=unix://${this.socket}`,
      `--pidfile=${this.pidFile}`,
      '--bridge=none',
      '--log-level=warn',
      `--iptables=${o.iptables ?? true}`,
    ];
    if (o.ipForward !== undefined) args.push(`--ip-forward=${o.ipForward}`);
    if (this.ownsContainerd) args.push(`--containerd=${this.containerdSocket}`);
    return [...args, ...(o.extraArgs ?? [])];
  }

  private get ownsContainerd(): boolean {
    return this.opts.ownContainerd ?? SLOWDOWN > 1;
  }

  private get containerdSocket(): string {
    return path.join(this.dir, 'containerd', 'containerd.sock');
  }

  /** Starts the containerd of {@link DockerdOptions.ownContainerd} unless it runs; it stays up across dockerd restarts. */
  private async startContainerd(): Promise<void> {
    if (this.containerd && isRunning(this.containerd)) return;
    const dir = path.join(this.dir, 'containerd');
    fs.rmSync(this.containerdSocket, { force: true });
    const logFile = path.join(this.dir, 'containerd.log');
    const child = spawnDaemon('containerd', ['--address', this.containerdSocket, '--root', path.join(dir, 'root'), '--state', path.join(dir, 'state'), '--log-level', 'warn'], { logFile });
    this.containerd = child;
    const timeoutMs = patient(20_000);
    await waitFor(
      () => {
        if (!isRunning(child)) throw new Error(`containerd exited (code ${child.exitCode}) during start\n${fileTail(logFile)}`);
        return fs.existsSync(this.containerdSocket);
      },
      timeoutMs,
      () => `containerd not ready after ${timeoutMs} ms\n${fileTail(logFile)}`,
      200,
    );
  }

  /** Starts dockerd and waits until `docker version` answers; on timeout kills it and throws with the log tail. */
  async start(): Promise<void> {
    if (this.pid !== undefined) throw new Error(`dockerd already running (pid ${this.pid})`);
    this.dropStaleContainerdPidfile();
    if (this.ownsContainerd) await this.startContainerd();
    const ns = this.opts.netns;
    // nsenter execs dockerd in place, so the child is dockerd itself (signals reach it directly).
    const [cmd, argv] = ns === undefined ? ['dockerd', this.args()] : ['nsenter', [`--net=/run/netns/${ns}`, '--', 'dockerd', ...this.args()]];
    const child = spawnDaemon(cmd, argv, { logFile: this.logFile });
    this.child = child;
    const timeoutMs = this.opts.readyTimeoutMs ?? patient(20_000);
    try {
      await waitFor(
        async () => {
          if (!isRunning(child)) throw new Error(`dockerd exited (code ${child.exitCode}, signal ${child.signalCode}) during start`);
          // A hung attempt (socket up, daemon still initialising) is "not yet", like a refused one.
          const r = await this.docker.dockerTry(['version'], { timeoutMs: 5_000 }).catch(() => undefined);
          return r?.code === 0;
        },
        timeoutMs,
        () => `dockerd not ready after ${timeoutMs} ms`,
        200,
      );
    } catch (e) {
      await terminate(child, 2_000);
      throw new Error(`${(e as Error).message}\n--- ${this.logFile} ---\n${fileTail(this.logFile)}`);
    }
  }

  /**
   * After a dockerd crash its containerd dies too, but may stay a zombie until pid 1 reaps it; dockerd's liveness
   * check (kill 0) takes the zombie for a running containerd, dials its dead socket and gives up. A real init reaps
   * at once, so removing the pidfile of a non-live process reproduces the normal restart.
   */
  private dropStaleContainerdPidfile(): void {
    const pidfile = path.join(this.execRoot, 'containerd', 'containerd.pid');
    if (!fs.existsSync(pidfile)) return;
    const pid = Number(fs.readFileSync(pidfile, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 0 || !isLiveProcess(pid)) fs.rmSync(pidfile, { force: true });
  }

  /**
   * Stops dockerd (SIGTERM, ≤15 s, then SIGKILL) keeping data-root and exec-root for a later `start()`.
   * After a SIGKILL, processes it left (containerd, shims, containers) are killed too.
   */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child) return;
    if ((await terminate(child, STOP_GRACE_MS)) === 'killed') killLeftovers(this.dir);
  }

  /**
   * Crash simulation: SIGKILL dockerd and wait for the exit. Its containerd follows (parent-death signal);
   * shims and containers stay, as after a real crash, until the next `start()` or `destroy()`.
   */
  async kill9(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child) await kill9(child);
  }

  /** `stop()`, then kill stragglers, unmount everything under the temp dir and remove it. Idempotent. */
  async destroy(): Promise<void> {
    try {
      await this.stop();
      if (this.containerd) await terminate(this.containerd, STOP_GRACE_MS);
    } finally {
      removeDockerdDir(this.dir);
      this.unregisterExitHook();
    }
  }

  /** Last lines of dockerd's log, for error messages. */
  logTail(lines = 40): string {
    return fileTail(this.logFile, lines);
  }
}

function dataRootOf(dir: string): string {
  return path.join(dir, 'data');
}

/** SIGKILLs every process a dockerd using `dir` may have left: containerd, shims and container processes. */
function killLeftovers(dir: string): void {
  const containersDir = path.join(dataRootOf(dir), 'containers');
  const ids = fs.existsSync(containersDir) ? fs.readdirSync(containersDir) : [];
  for (const pid of new Set([...pidsReferencing(dir), ...pidsInCgroupsNamed(ids)])) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited meanwhile
    }
  }
}

/**
 * Synchronous so the process-exit hook can use it too. Lazy unmounts (deepest first) because a netns file or
 * overlay still held by a dying process would refuse a plain umount.
 */
function removeDockerdDir(dir: string): void {
  if (!fs.existsSync(dir)) return;
  killLeftovers(dir);
  for (const mount of mountsUnder(dir)) {
    const r = runSync('umount', ['-l', mount]);
    if (r.code !== 0 && mountsUnder(mount).includes(mount)) {
      throw new Error(`umount -l ${mount} failed: ${r.stderr.trim()}`);
    }
  }
  // --one-file-system: should a mount have escaped unmounting, fail rather than delete what it shows.
  const r = runSync('rm', ['-rf', '--one-file-system', dir]);
  if (r.code !== 0) throw new Error(`rm -rf ${dir} failed: ${r.stderr.trim()}`);
}

function isStale(dir: string): boolean {
  try {
    const owner = Number(fs.readFileSync(path.join(dir, OWNER_FILE), 'utf8').trim());
    return !isLiveProcess(owner);
  } catch {
    return Date.now() - fs.statSync(dir).mtimeMs > UNOWNED_GRACE_MS;
  }
}

/**
 * Removes temp dirs (with their processes and mounts) left by test runs that died without cleaning up, e.g. a
 * SIGKILLed jest whose dockerd then got only its parent-death SIGTERM. Dirs of live runs are left alone.
 */
export function sweepStaleDirs(): void {
  const parent = path.dirname(TEMP_PREFIX);
  const base = path.basename(TEMP_PREFIX);
  for (const entry of fs.readdirSync(parent)) {
    const dir = path.join(parent, entry);
    if (!entry.startsWith(base) || !isStale(dir)) continue;
    try {
      removeDockerdDir(dir);
    } catch (e) {
      console.warn(`cannot remove stale ${dir}: ${(e as Error).message}`);
    }
  }
}

/** Creates a {@link Dockerd} and starts it; on failure its temp dir is removed before the error propagates. */
export async function startDockerd(opts: DockerdOptions = {}): Promise<Dockerd> {
  const d = new Dockerd(opts);
  try {
    await d.start();
  } catch (e) {
    await d.destroy();
    throw e;
  }
  return d;
}
