import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * The Makefile's runtime choice and build graph, run for real in a scratch copy of the repository's build files with
 * a fake `node` and `npm` first on PATH: they log what they are asked to do, so no download, npm ci or tsc happens.
 */
const REPO = path.resolve(__dirname, '..', '..');
const COPIED = ['Makefile', 'scripts', 'package.json', 'package-lock.json', 'tsconfig.json'];

interface Sandbox {
  dir: string;
  /** Runs make in the sandbox; its stdout. */
  make(args: string[]): string;
  /** What the fake node and npm were asked to do since the last call, one line each. */
  calls(): string[];
  /** Marks a file newer than everything else in the sandbox, as an edit after the last build would. */
  edit(file: string): void;
}

const sandboxes: string[] = [];
afterAll(() => {
  for (const dir of sandboxes) fs.rmSync(dir, { recursive: true, force: true });
});

/** A scratch repository whose PATH starts with a fake node reporting `nodeVersion` (and a fake npm unless `npm` is false). */
function sandbox(nodeVersion: string, npm = true): Sandbox {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-make-'));
  sandboxes.push(dir);
  for (const f of COPIED.filter((f) => fs.existsSync(path.join(REPO, f)))) fs.cpSync(path.join(REPO, f), path.join(dir, f), { recursive: true });
  fs.mkdirSync(path.join(dir, 'src'));
  fs.writeFileSync(path.join(dir, 'src', 'main.ts'), 'export {};\n');
  const bin = path.join(dir, 'fakebin');
  const log = path.join(dir, 'calls.log');
  fs.mkdirSync(bin);
  fs.writeFileSync(
    path.join(bin, 'node'),
    `#!/bin/sh\nif [ "$1" = --version ]; then echo ${nodeVersion}; exit 0; fi\necho "node $*" >> ${log}\ncase "$*" in *tsc*) mkdir -p dist;; esac\n`,
    { mode: 0o755 },
  );
  if (npm) fs.writeFileSync(path.join(bin, 'npm'), `#!/bin/sh\necho "npm $*" >> ${log}\nmkdir -p node_modules\n`, { mode: 0o755 });
  // The caller's own choices must not leak into the sandbox's make.
  const { NODE_RUNTIME: _runtime, MAKEFLAGS: _flags, MFLAGS: _mflags, ...env } = process.env;
  let seen = 0;
  return {
    dir,
    make: (args) =>
      execFileSync('make', ['--no-print-directory', ...args], {
        cwd: dir,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'], // make's complaints go into the thrown error, not the test log
        env: { ...env, PATH: `${bin}:${process.env.PATH ?? ''}` },
      }),
    calls: () => {
      const lines = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter(Boolean) : [];
      const fresh = lines.slice(seen);
      seen = lines.length;
      return fresh;
    },
    edit: (file) => {
      // Everything else moves a minute back (rather than the file into the future, which make warns about).
      const past = new Date(Date.now() - 60_000);
      for (const f of fs.readdirSync(dir, { recursive: true, encoding: 'utf8' })) fs.utimesSync(path.join(dir, f), past, past);
      const now = new Date();
      fs.utimesSync(path.join(dir, file), now, now);
    },
  };
}

test('an older node on PATH gets the pinned Node 24 runtime, fetched into .tmp/ and used for npm ci and tsc', () => {
  const sb = sandbox('v18.19.0');
  const plan = sb.make(['-n', 'build']);
  const runtime = plan.match(/scripts\/node-runtime\.sh (\S*\/\.tmp\/node-v(24\.\d+\.\d+)) /);
  expect(runtime?.[1]).toBe(path.join(sb.dir, '.tmp', `node-v${runtime?.[2] ?? ''}`));
  expect(plan).toContain(`${runtime?.[1] ?? ''}/bin/npm ci`);
  expect(plan).toContain(`${runtime?.[1] ?? ''}/bin/node node_modules/typescript/bin/tsc -p tsconfig.json`);
});

test('a node >= 24 without npm on PATH also gets the pinned runtime', () => {
  const sb = sandbox('v24.1.0', false);
  expect(sb.make(['-n', 'build'])).toContain('scripts/node-runtime.sh');
});

test('NODE_RUNTIME=system with an older node stops before doing anything, naming the version', () => {
  const sb = sandbox('v18.19.0');
  expect(() => sb.make(['-n', 'build', 'NODE_RUNTIME=system'])).toThrow(/node on PATH is "v18\.19\.0", tsnet needs >= 24/);
  expect(sb.calls()).toEqual([]);
});

test('a node >= 24 with npm on PATH is used as it is', () => {
  const sb = sandbox('v24.1.0');
  sb.make(['build']);
  expect(sb.calls()).toEqual(['npm ci --no-audit --no-fund', 'node node_modules/typescript/bin/tsc -p tsconfig.json']);
});

test('build runs nothing when nothing changed, tsc after a source change, npm ci after a lockfile or runtime change', () => {
  const sb = sandbox('v24.1.0');
  sb.make(['build']);
  expect(sb.calls()).toHaveLength(2);

  sb.make(['build']);
  expect(sb.calls()).toEqual([]);

  sb.edit('src/main.ts');
  sb.make(['build']);
  expect(sb.calls()).toEqual(['node node_modules/typescript/bin/tsc -p tsconfig.json']);

  fs.writeFileSync(path.join(sb.dir, 'src', 'added.ts'), 'export {};\n');
  sb.edit('src/added.ts');
  sb.make(['build']);
  expect(sb.calls()).toEqual(['node node_modules/typescript/bin/tsc -p tsconfig.json']);

  sb.edit('package-lock.json');
  sb.make(['build']);
  expect(sb.calls()).toEqual(['npm ci --no-audit --no-fund', 'node node_modules/typescript/bin/tsc -p tsconfig.json']);

  fs.writeFileSync(path.join(sb.dir, 'fakebin', 'node'), fs.readFileSync(path.join(sb.dir, 'fakebin', 'node'), 'utf8').replace('v24.1.0', 'v24.2.0'));
  sb.make(['build']);
  expect(sb.calls()).toEqual(['npm ci --no-audit --no-fund', 'node node_modules/typescript/bin/tsc -p tsconfig.json']);
});

test('npm ci is refused through a symlinked node_modules (it would empty the checkout the link points to)', () => {
  const sb = sandbox('v24.1.0');
  const shared = path.join(sb.dir, 'other-checkout-modules');
  fs.mkdirSync(shared);
  fs.writeFileSync(path.join(shared, 'kept'), '');
  fs.symlinkSync(shared, path.join(sb.dir, 'node_modules'));
  expect(() => sb.make(['build'])).toThrow(/node_modules is a symlink: npm ci would empty .*other-checkout-modules/);
  expect(sb.calls()).toEqual([]);
  expect(fs.readdirSync(shared)).toEqual(['kept']);
});
