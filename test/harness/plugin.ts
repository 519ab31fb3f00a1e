import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { type Docker } from './dockerd';
import { patient, runOk } from './exec';
import { REPO_ROOT } from './tsnet';

/** The plugin directory `make plugin-dir` assembles (config.json + rootfs). */
export const PLUGIN_BUILD_DIR = path.join(REPO_ROOT, '.tmp', 'plugin');

/**
 * Builds the managed plugin's directory with the Makefile, as CI and operators do. The Debian base and the production
 * node_modules are cached under .tmp/ by their inputs, so only the first run pays for mmdebstrap and npm ci.
 */
export async function buildPluginDir(): Promise<void> {
  await runOk('make', ['--no-print-directory', 'plugin-dir'], { cwd: REPO_ROOT, timeoutMs: patient(15 * 60_000) });
}

/** MiB of a directory tree on disk. */
export async function sizeMiB(dir: string): Promise<number> {
  const { stdout } = await runOk('du', ['-sm', dir], { timeoutMs: patient(60_000) });
  return Number(stdout.split('\t')[0]);
}

/** Names, subnets and a port unique to one run of a suite (other suites' tsnets and dockerds run beside it). */
export interface RunNames {
  tag: string;
  /** Two /24s (as `a.b.c`, add `.0/24`) in 10.200-249.x. */
  subnets: readonly [string, string];
  /** A veth pair for macvlan parents: `<prefix><tag>a` / `...b`. */
  parent: string;
  peer: string;
  /** tsnet's nftables table, and so its links' owner tag `tsnet:<table>`. */
  nftTable: string;
  /** A port from 20000-39999 (published ports, swarm's listen port and the one after it). */
  port: number;
}

export function runNames(prefix: string): RunNames {
  const tag = randomBytes(3).toString('hex');
  const n = parseInt(tag, 16);
  const subnet = (i: number) => `10.${200 + ((n + 25 * i) % 50)}.${(n >> 8) % 256}`;
  return { tag, subnets: [subnet(0), subnet(1)], parent: `${prefix}${tag}a`, peer: `${prefix}${tag}b`, nftTable: `${prefix}${tag}`, port: 20000 + (n % 20000) };
}

/** The run's veth pair, both ends up: the near end is a macvlan parent. */
export async function makeVethParent(names: RunNames): Promise<void> {
  await runOk('ip', ['link', 'add', names.parent, 'type', 'veth', 'peer', 'name', names.peer]);
  await runOk('ip', ['link', 'set', names.parent, 'up']);
  await runOk('ip', ['link', 'set', names.peer, 'up']);
}

/** Runs every cleanup step even when one fails, then rejects with the first failure. */
export async function cleanupSteps(steps: ReadonlyArray<() => Promise<unknown>>): Promise<void> {
  const failures: unknown[] = [];
  for (const step of steps) await step().catch((err: unknown) => failures.push(err));
  if (failures.length > 0) throw failures[0];
}

/** The settings a managed tsnet needs on a private dockerd (its socket dir, state dir) and per run (names). */
export interface PluginSettings {
  /** The reference the plugin is installed as: dockerd's driver name for it. */
  ref: string;
  /** Host directory of the state store (the `state` mount). */
  stateDir: string;
  /** Host directory holding dockerd's API socket (the `docker` mount) and the socket's file name in it. */
  dockerSocket: string;
  nftTable: string;
  extra?: Record<string, string>;
}

/** `docker plugin set` / `docker plugin install` KEY=VALUE arguments for `s`. */
export function pluginArgs(s: PluginSettings): string[] {
  const vars: Record<string, string> = {
    'state.source': s.stateDir,
    'docker.source': path.dirname(s.dockerSocket),
    DOCKER_HOST: `unix:///host/run/${path.basename(s.dockerSocket)}`,
    TSNET_DRIVER_NAME: s.ref,
    TSNET_NFT_TABLE: s.nftTable,
    LOG_LEVEL: 'debug',
    ...s.extra,
  };
  fs.mkdirSync(s.stateDir, { recursive: true });
  return Object.entries(vars).map(([k, v]) => `${k}=${v}`);
}

/**
 * `docker plugin install` of `ref` with `settings`, disabled first so the mounts point at the private daemon's
 * directories before tsnet starts; resolves with the milliseconds from install to enabled.
 */
export async function installPlugin(docker: Docker, s: PluginSettings): Promise<number> {
  const start = performance.now();
  await docker.docker(['plugin', 'install', '--grant-all-permissions', '--disable', s.ref, ...pluginArgs(s)], { timeoutMs: patient(300_000) });
  await docker.docker(['plugin', 'enable', s.ref], { timeoutMs: patient(60_000) });
  return Math.round(performance.now() - start);
}

/** Removes the plugin whatever its state (used in cleanup). */
export async function removePlugin(docker: Docker, ref: string): Promise<void> {
  await docker.dockerTry(['plugin', 'disable', '-f', ref], { timeoutMs: patient(60_000) });
  await docker.dockerTry(['plugin', 'rm', '-f', ref], { timeoutMs: patient(60_000) });
}

/** `docker plugin create` of the built directory as `s.ref` on this daemon (no registry), set up and enabled. */
export async function createPlugin(docker: Docker, s: PluginSettings): Promise<void> {
  await docker.docker(['plugin', 'create', s.ref, PLUGIN_BUILD_DIR], { timeoutMs: patient(300_000) });
  await docker.docker(['plugin', 'set', s.ref, ...pluginArgs(s)]);
  await docker.docker(['plugin', 'enable', s.ref], { timeoutMs: patient(60_000) });
}
