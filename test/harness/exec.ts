/**
 * The one way the e2e harness runs programs: argv arrays, never a shell, always with a timeout.
 * Long-lived daemons (dockerd, tsnet) go through {@link spawnDaemon} so a crashed test run leaves none behind.
 */
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';

/** Outcome of a finished command. `code` is 128+signal number when the command died of a signal. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Kill the command (SIGKILL) and reject after this long. Default 30 s. */
  timeoutMs?: number;
  /** Written to the command's stdin, then stdin is closed. A stream is piped. */
  input?: string | Buffer | Readable;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/**
 * How many times longer the harness waits on a slow host. `make test` sets TSNET_E2E_SLOW=1 for its VM run, where a
 * software-emulated CPU starts node, dockerd and containerd many times slower than a real one.
 */
export const SLOWDOWN = process.env.TSNET_E2E_SLOW === '1' ? 8 : 1;

/** `ms` stretched by {@link SLOWDOWN}: every timeout of the harness, and of suites that run in the VM. */
export function patient(ms: number): number {
  return ms * SLOWDOWN;
}

const DEFAULT_TIMEOUT_MS = patient(30_000);

/** Renders argv for error messages; quoting only so an empty or spaced argument stays visible. */
export function formatCommand(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map((a) => (a === '' || /[\s'"]/.test(a) ? JSON.stringify(a) : a)).join(' ');
}

/** Thrown by {@link runOk} (non-zero exit) and {@link run} (timeout, spawn failure). */
export class CommandError extends Error {
  constructor(
    message: string,
    readonly command: string,
    readonly result?: RunResult,
  ) {
    super(message);
    this.name = 'CommandError';
  }
}

function describeFailure(what: string, command: string, stdout: string, stderr: string): string {
  return `${what}: ${command}\n--- stdout ---\n${stdout.trimEnd()}\n--- stderr ---\n${stderr.trimEnd()}`;
}

function signalCode(signal: NodeJS.Signals | null): number {
  return 128 + (signal ? os.constants.signals[signal] : 0);
}

/**
 * Runs `cmd args` and resolves with its exit code and output whatever the code.
 * Rejects only when the command cannot be spawned or outlives `timeoutMs`.
 */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const command = formatCommand(cmd, args);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new CommandError(`cannot run ${command}: ${e.message}`, command));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result: RunResult = {
        code: code ?? signalCode(signal),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      };
      if (timedOut) {
        reject(new CommandError(describeFailure(`timed out after ${timeoutMs} ms`, command, result.stdout, result.stderr), command, result));
      } else {
        resolve(result);
      }
    });
    // A command that exits without reading its stdin makes the write fail with EPIPE; its exit code tells the story.
    child.stdin.on('error', () => undefined);
    const input = opts.input;
    if (input === undefined) child.stdin.end();
    else if (typeof input === 'string' || Buffer.isBuffer(input)) child.stdin.end(input);
    else input.pipe(child.stdin);
  });
}

/** Like {@link run} but rejects with a {@link CommandError} (command, stdout, stderr in the message) on a non-zero exit. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const result = await run(cmd, args, opts);
  if (result.code !== 0) {
    const command = formatCommand(cmd, args);
    throw new CommandError(describeFailure(`exit code ${result.code}`, command, result.stdout, result.stderr), command, result);
  }
  return result;
}

/**
 * Runs `first | second` without a shell: `first`'s stdout feeds `second`'s stdin.
 * Rejects if either exits non-zero.
 */
export async function runPipeOk(
  first: { cmd: string; args: readonly string[] },
  second: { cmd: string; args: readonly string[] },
  opts: Omit<RunOptions, 'input'> = {},
): Promise<RunResult> {
  const producer = spawn(first.cmd, first.args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const producerErr: Buffer[] = [];
  producer.stderr.on('data', (b: Buffer) => producerErr.push(b));
  const producerDone = new Promise<number>((resolve, reject) => {
    producer.on('error', reject);
    producer.on('close', (code, signal) => resolve(code ?? signalCode(signal)));
  });
  const [result, producerCode] = await Promise.all([runOk(second.cmd, second.args, { ...opts, input: producer.stdout }), producerDone]);
  if (producerCode !== 0) {
    const command = formatCommand(first.cmd, first.args);
    throw new CommandError(describeFailure(`exit code ${producerCode}`, command, '', Buffer.concat(producerErr).toString('utf8')), command);
  }
  return result;
}

/**
 * Synchronous variant for exit handlers and cleanup that must not yield (e.g. `umount` in `process.on('exit')`).
 * Never throws; a spawn failure reads as code -1.
 */
export function runSync(cmd: string, args: readonly string[], timeoutMs = 10_000): RunResult {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
  // stdout/stderr are typed as strings but are null when the spawn itself failed.
  const out: { stdout: string | null; stderr: string | null } = r;
  return { code: r.status ?? (r.error ? -1 : signalCode(r.signal)), stdout: out.stdout ?? '', stderr: out.stderr ?? '' };
}

/** Polls `check` every `intervalMs` until it returns true; rejects with `failure()`'s text after `timeoutMs`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  failure: () => string,
  intervalMs = 100,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() >= deadline) throw new Error(failure());
    await sleep(intervalMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Last `lines` lines of a (log) file, or a note that it cannot be read. */
export function fileTail(file: string, lines = 40): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch (e) {
    return `(cannot read ${file}: ${(e as Error).message})`;
  }
}

// ---- daemons ----

interface ExitRegistry {
  daemons: Set<ChildProcess>;
  hooks: Set<() => void>;
}

const REGISTRY_KEY = Symbol.for('tsnet.e2e.exitRegistry');

/**
 * Node's own `process`. jest hands each test file a copy whose events never fire ('exit' included); a function made
 * by a core module's Function constructor runs in Node's global scope, where `process` is the real one.
 */
function realProcess(): NodeJS.Process {
  const OuterFunction = fs.readFileSync.constructor as FunctionConstructor;
  const getProcess = OuterFunction('return process') as () => NodeJS.Process;
  return getProcess();
}

/**
 * One registry and one 'exit' listener per OS process, shared by every test file's copy of this module
 * (jest loads it afresh per file; a listener per file would pile up).
 */
function exitRegistry(): ExitRegistry {
  const host = realProcess() as NodeJS.Process & { [REGISTRY_KEY]?: ExitRegistry };
  const existing = host[REGISTRY_KEY];
  if (existing) return existing;
  const registry: ExitRegistry = { daemons: new Set(), hooks: new Set() };
  host[REGISTRY_KEY] = registry;
  host.on('exit', () => {
    for (const child of registry.daemons) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const hook of registry.hooks) {
      try {
        hook();
      } catch {
        // best effort: the process is exiting anyway
      }
    }
  });
  return registry;
}

/**
 * Registers a synchronous best-effort cleanup run at process exit (after leftover daemons are SIGKILLed).
 * Returns a function that unregisters it.
 */
export function onProcessExit(hook: () => void): () => void {
  const { hooks } = exitRegistry();
  hooks.add(hook);
  return () => hooks.delete(hook);
}

const setprivPath = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => fs.existsSync(p));

export interface DaemonOptions {
  /** stdout and stderr are appended here. */
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/**
 * Starts a long-lived process with output appended to `logFile`.
 * It is SIGKILLed at process exit if still alive. If this process dies without running exit handlers (jest killed
 * with SIGKILL), `setpriv --pdeathsig` (when present) sends it SIGTERM — sometimes more than once, which makes
 * dockerd quit without stopping its containers; `sweepStaleDirs()` in the next run removes what that leaves.
 */
export function spawnDaemon(cmd: string, args: readonly string[], opts: DaemonOptions): ChildProcess {
  const { daemons } = exitRegistry();
  fs.mkdirSync(path.dirname(opts.logFile), { recursive: true });
  const fd = fs.openSync(opts.logFile, 'a');
  try {
    const [file, argv] = setprivPath ? [setprivPath, ['--pdeathsig', 'TERM', '--', cmd, ...args]] : [cmd, [...args]];
    const child = spawn(file, argv, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', fd, fd] });
    // Unref'd so a test that forgets to stop a daemon does not hang jest; the exit handler kills it instead.
    child.unref();
    daemons.add(child);
    child.on('exit', () => daemons.delete(child));
    child.on('error', () => daemons.delete(child));
    return child;
  } finally {
    fs.closeSync(fd);
  }
}

/** True while `child` has neither exited nor been killed by a signal. */
export function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Resolves true once `child` has exited, false if it is still running after `timeoutMs`. */
export function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (!isRunning(child)) return Promise.resolve(true);
  return new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, timeoutMs);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/**
 * SIGTERM, wait up to `graceMs`, then SIGKILL and wait for the exit.
 * Returns how it ended so callers can report an unclean shutdown.
 */
export async function terminate(child: ChildProcess, graceMs: number): Promise<'exited' | 'killed'> {
  if (!isRunning(child)) return 'exited';
  child.kill('SIGTERM');
  if (await waitForExit(child, graceMs)) return 'exited';
  await kill9(child);
  return 'killed';
}

/** SIGKILL and wait for the exit. */
export async function kill9(child: ChildProcess): Promise<void> {
  if (!isRunning(child)) return;
  child.kill('SIGKILL');
  if (!(await waitForExit(child, 10_000))) throw new Error(`pid ${child.pid} survived SIGKILL for 10 s`);
}

/**
 * Retries an assertion until it passes or `timeoutMs` runs out, then throws its last failure. For state tsnet
 * settles in the background (links deleted after the call that removed them was answered).
 */
export async function eventually(assertion: () => Promise<void> | void, timeoutMs = 5_000, intervalMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await assertion();
      return;
    } catch (err) {
      if (Date.now() >= deadline) throw err;
      await sleep(intervalMs);
    }
  }
}
