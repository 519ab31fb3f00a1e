/**
 * Fuzz soak: the properties of test/unit/fuzz.test.ts (same generators and checks, test/fuzz/) with at least
 * 100,000 bodies spread over every remote API method. Writes bench/results/fuzz-<date>.md with count, seed,
 * failures and duration; exits non-zero on any failure.
 *
 *   make fuzz-soak            # FUZZ_TOTAL=100000 FUZZ_SEED=20261201 by default
 */
import fs from 'node:fs';
import path from 'node:path';
import { log } from '../src/log';
import { FuzzApp } from '../test/fuzz/app';
import { METHODS } from '../test/fuzz/bodies';
import { fuzzAll } from '../test/fuzz/check';

const ROOT = path.resolve(__dirname, '..', '..', '..');

async function main(): Promise<void> {
  const total = Number(process.env.FUZZ_TOTAL ?? 100_000);
  const seed = Number(process.env.FUZZ_SEED ?? 20261201);
  const perMethod = Math.ceil(total / METHODS.length);
  log.silent = true; // every rejected body is logged at warn; the report is what matters
  const start = performance.now();
  const results = await fuzzAll(() => FuzzApp.start(), perMethod, seed);
  const seconds = (performance.now() - start) / 1000;
  const failures = results.flatMap((r) => r.failures);
  const count = results.reduce((n, r) => n + r.bodies, 0);
  const date = new Date().toISOString().slice(0, 10);
  const lines = [
    `# Fuzz soak ${date}`,
    '',
    `Bodies: ${count} (${perMethod} per method, ${METHODS.length} methods), seed ${seed}, duration ${seconds.toFixed(1)} s, node ${process.version}.`,
    `Result: ${failures.length === 0 ? 'no failures' : `${failures.length} failures`} (properties: an answer to every request; 200 with a valid reply or an error status other than 500 with {"Err"} (400s quoting the field or value); a rejected call changes neither store nor fake kernel).`,
    '',
    '| method | bodies | accepted (200) | failures |',
    '|---|---:|---:|---:|',
    ...results.map((r) => `| ${r.method} | ${r.bodies} | ${r.accepted} | ${r.failures.length} |`),
    '',
    ...(failures.length > 0 ? ['## Failures (first 50)', '', ...failures.slice(0, 50).map((f) => `- ${f.method}: ${f.problem}; status ${f.status}; body \`${f.body}\`; reply \`${f.reply}\``), ''] : []),
  ];
  const out = path.join(ROOT, 'bench', 'results', `fuzz-${date}.md`);
  fs.writeFileSync(out, lines.join('\n'));
  process.stdout.write(`${lines.slice(0, 4).join('\n')}\nwritten to ${out}\n`);
  process.exitCode = failures.length === 0 ? 0 : 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`fuzz soak failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(2);
});
