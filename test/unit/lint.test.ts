import { spawnSync } from 'node:child_process';
import path from 'node:path';

/**
 * The lint rules `make lint` enforces, checked on small probes linted as if they were files in src/ or test/
 * (type-aware: each probe is type-checked with the project's tsconfig). ESLint runs in a child node (its config is
 * an ES module, which jest's module system cannot load); one child lints every probe.
 */
const REPO = path.resolve(__dirname, '..', '..');
const LINT_PROBES = `
const { ESLint } = require('eslint');
const probes = JSON.parse(require('fs').readFileSync(0, 'utf8'));
// The probes exist only in memory: the project service takes them as files of the default project (tsconfig.json).
const eslint = new ESLint({
  cwd: process.cwd(),
  overrideConfig: { languageOptions: { parserOptions: { projectService: { allowDefaultProject: ['src/lint-probe-*.ts', 'test/unit/lint-probe-*.ts'], defaultProject: 'tsconfig.json' } } } },
});
(async () => {
  const out = [];
  for (const p of probes) {
    const [r] = await eslint.lintText(p.code, { filePath: p.filePath });
    out.push(r.messages.map((m) => m.ruleId ?? 'fatal: ' + m.message));
  }
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(2); });
`;

interface Probe {
  code: string;
  dir: 'src' | 'test/unit';
}

/** The rules each probe breaks, in order. */
function rulesHit(probes: Probe[]): string[][] {
  const input = probes.map((p) => ({ code: p.code, filePath: path.join(REPO, p.dir, `lint-probe-${process.pid}.ts`) }));
  const r = spawnSync(process.execPath, ['-e', LINT_PROBES], { cwd: REPO, input: JSON.stringify(input), encoding: 'utf8', maxBuffer: 16 << 20 });
  if (r.status !== 0) throw new Error(`eslint probe run failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as string[][];
}

const PROMISE = 'async function work(): Promise<void> { await Promise.resolve(); }\n';

const REJECTED: Array<[what: string, code: string, rule: string]> = [
  ['a floating promise', `${PROMISE}export function f(): void { work(); }`, '@typescript-eslint/no-floating-promises'],
  ['a void-ed promise', `${PROMISE}export function f(): void { void work(); }`, '@typescript-eslint/no-floating-promises'],
  [
    'a switch missing a union member, even with a default',
    `export function f(x: 'a' | 'b'): number { switch (x) { case 'a': return 1; default: return 0; } }`,
    '@typescript-eslint/switch-exhaustiveness-check',
  ],
  ['child_process exec', `import { exec } from 'node:child_process';\nexport const run = exec;`, 'no-restricted-imports'],
  ['child_process execSync', `import { execSync } from 'child_process';\nexport const run = execSync;`, 'no-restricted-imports'],
  ['a namespace import of child_process', `import * as cp from 'node:child_process';\nexport const run = cp.spawn;`, 'no-restricted-syntax'],
  [
    'shell: true',
    `import { execFile } from 'node:child_process';\nexport function f(): void { execFile('ls', [], { shell: true }); }`,
    'no-restricted-syntax',
  ],
  [
    'an unchecked cast of parsed input',
    `export function f(s: string): { a: number } { return JSON.parse(s) as { a: number }; }`,
    '@typescript-eslint/no-unsafe-type-assertion',
  ],
];

const GOOD = `import { spawn } from 'node:child_process';
${PROMISE}
export async function f(x: 'a' | 'b'): Promise<number> {
  await work();
  spawn('ip', ['link'], { shell: false }).on('error', () => undefined);
  switch (x) {
    case 'a':
      return 1;
    case 'b':
      return 2;
  }
}
`;
const CAST = `export function f(s: string): { a: number } { return JSON.parse(s) as { a: number }; }`;
const VOIDED = `${PROMISE}export function f(): void { void work(); }`;

let hits: string[][] = [];
beforeAll(() => {
  hits = rulesHit([
    ...REJECTED.map(([, code]) => ({ code, dir: 'src' as const })),
    { code: GOOD, dir: 'src' },
    { code: CAST, dir: 'test/unit' },
    { code: VOIDED, dir: 'test/unit' },
  ]);
}, 120_000);

test.each(REJECTED.map(([what, , rule], i) => [what, rule, i] as const))('src/ rejects %s (%s)', (_what, rule, i) => {
  expect(hits[i]).toContain(rule);
});

test('code that follows the rules passes', () => {
  expect(hits[REJECTED.length]).toEqual([]);
});

test('tests may cast what they read, but not leave promises floating', () => {
  expect(hits[REJECTED.length + 1]).toEqual([]);
  expect(hits[REJECTED.length + 2]).toContain('@typescript-eslint/no-floating-promises');
});
