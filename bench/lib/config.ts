/** The bench's knobs (env) and the trees it measures: its own repository and the tsnet under test. */
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT as HARNESS_ROOT } from '../../test/harness/tsnet';

export function envInt(name: string, dflt: number, min: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name}=${v}: expected an integer >= ${min}`);
  return n;
}

/** The bench's own repository root (the one holding package.json), whatever directory it was compiled into. */
export function findRepoRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'src', 'main.ts'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no tsnet repository above ${__dirname}`);
  }
}
export const REPO = findRepoRoot();
/**
 * The tsnet under test: this repository, or another tree with src/, tsconfig.json and dist/ (e.g. an older commit
 * exported with `git archive`) given as BENCH_TSNET_ROOT; node_modules comes from this repository if it has none.
 */
export const TSNET_ROOT = path.resolve(REPO, process.env.BENCH_TSNET_ROOT ?? '.');
/** How the results name the tsnet under test; default: the commit (+ "dirty src") for this repository. */
export const TSNET_LABEL = process.env.BENCH_TSNET_LABEL;
export const RESULTS_DIR = path.join(REPO, 'bench', 'results');

/**
 * The harness takes the repository root to be two levels above its compiled files (right under ts-jest). Compiled
 * into .tmp/bench/ that is .tmp/bench, so the parts it uses there (bin/tsnet, dist/main.js, and src/, tsconfig.json,
 * node_modules for ensureBuilt) are linked to the real ones.
 */
export function linkHarnessRoot(): void {
  if (path.resolve(HARNESS_ROOT) === TSNET_ROOT) return;
  if (path.resolve(HARNESS_ROOT) === REPO) throw new Error('BENCH_TSNET_ROOT needs the bench compiled into .tmp/bench (make bench)');
  for (const entry of ['dist', 'src', 'tsconfig.json', 'node_modules', 'bin']) {
    const link = path.join(HARNESS_ROOT, entry);
    // A tree from before the launcher has no bin/: the harness then runs its dist/main.js with node.
    if (entry === 'bin' && !fs.existsSync(path.join(TSNET_ROOT, entry))) {
      fs.rmSync(link, { force: true });
      continue;
    }
    const from = entry === 'node_modules' && !fs.existsSync(path.join(TSNET_ROOT, entry)) ? REPO : TSNET_ROOT;
    const target = path.relative(HARNESS_ROOT, path.join(from, entry));
    try {
      if (fs.readlinkSync(link) === target) continue;
      fs.rmSync(link);
    } catch {
      // absent (or not a link: symlinkSync below reports that)
    }
    fs.symlinkSync(target, link);
  }
}
