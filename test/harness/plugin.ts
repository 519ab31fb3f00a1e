import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { type Docker } from './dockerd';
import { patient, runOk } from './exec';
import { REPO_ROOT } from './tsnet';

/** The plugin directory `make plugin-dir` assembles (plugin/config.json + rootfs). */
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

/** A suffix for names unique to this run (plugin references, nft tables, links). */
export function runTag(): string {
  return randomBytes(3).toString('hex');
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
