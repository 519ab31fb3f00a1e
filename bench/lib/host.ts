/** Host facts and waits of the bench. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Docker } from '../../test/harness/dockerd';
import { run, sleep } from '../../test/harness/exec';
import { REPO, TSNET_LABEL, TSNET_ROOT } from './config';
import { r2 } from './stats';

/** The pid of a process the bench started and still needs; it is a bug in the bench if that process is gone. */
export function livePid(pid: number | undefined, what: string): number {
  if (pid === undefined) throw new Error(`${what} is not running`);
  return pid;
}

export function readRssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}

/** Rows per collection in the tsnet store under `stateDir` (read-only, while tsnet runs). */
export function storeRowsIn(stateDir: string): Partial<Record<string, number>> {
  const db = new Database(path.join(stateDir, 'tsnet.db'), { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare('SELECT collection, count(*) AS n FROM records GROUP BY collection').all() as Array<{ collection: string; n: number }>;
    return Object.fromEntries(rows.map((r) => [r.collection, r.n]).sort());
  } finally {
    db.close();
  }
}

export async function cmdOut(cmd: string, args: string[]): Promise<string> {
  try {
    const r = await run(cmd, args, { timeoutMs: 10_000 });
    return (r.stdout || r.stderr).trim().split('\n')[0] ?? '';
  } catch {
    return '';
  }
}

export const linkGone = async (name: string): Promise<boolean> => (await run('ip', ['link', 'show', 'dev', name])).code !== 0;

/**
 * Waits, untimed, until the links a tsnet command removes are really gone. Work tsnet might finish after answering
 * (deletions in the background) then neither lands on the next measurement (Docker's, on a 2-core machine) nor
 * goes unreported: returns the ms from `since` (the command's return) until done, one `ip` poll (~3 ms) included.
 */
export async function quiesce(what: string, done: () => Promise<boolean>, since: number): Promise<number> {
  const deadline = Date.now() + 10_000;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`tsnet: ${what} still pending 10 s after the command returned`);
    await sleep(2);
  }
  return performance.now() - since;
}

/** The machine, the docker and tools versions and the tsnet under test, for the results. */
export async function hostFacts(docker: Docker) {
  const meminfo = fs.readFileSync('/proc/meminfo', 'utf8');
  const memKiB = Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0);
  const cpu = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown';
  const commit = await cmdOut('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']);
  const dirty = (await run('git', ['-C', REPO, 'status', '--porcelain', '--', 'src']).catch(() => undefined))?.stdout.trim() ? '+dirty src' : '';
  const tsnet = TSNET_LABEL ?? (TSNET_ROOT === REPO ? `${commit}${dirty ? ' ' + dirty : ''}` : TSNET_ROOT);
  return {
    hostname: os.hostname(),
    nproc: Number(await cmdOut('nproc', [])) || os.cpus().length,
    memoryGiB: r2(memKiB / 1024 / 1024),
    kernel: os.release(),
    cpu,
    dockerd: await docker.docker(['version', '--format', '{{.Server.Version}}']),
    dockerCli: await docker.docker(['version', '--format', '{{.Client.Version}}']),
    iptables: await cmdOut('iptables', ['--version']),
    node: process.version,
    tsnetCommit: tsnet,
    iperf3: await cmdOut('iperf3', ['--version']),
  };
}
