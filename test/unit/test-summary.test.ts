import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { countTests, type JestReport, summarise } from '../summary';

/** make test's last lines: native and VM jest reports combined, each test counted once. */

function file(name: string, statuses: string[], status = statuses.includes('failed') ? 'failed' : 'passed'): JestReport['testResults'][number] {
  return { name, status, assertionResults: statuses.map((s) => ({ status: s })) };
}

const native: JestReport = {
  testResults: [
    file('/r/test/unit/a.test.ts', ['passed', 'passed', 'passed']),
    file('/r/test/e2e/bridge.test.ts', ['passed', 'pending']),
    file('/r/test/e2e/vlan.test.ts', ['pending', 'pending', 'pending']),
  ],
};

test('counts passed, failed and skipped (pending, todo) tests; a file that could not run counts as one failure', () => {
  const report: JestReport = { testResults: [file('x', ['passed', 'failed', 'pending', 'todo']), file('broken', [], 'failed')] };
  expect(countTests(report)).toEqual({ passed: 1, failed: 2, skipped: 2 });
  expect(countTests(report, (f) => f === 'x')).toEqual({ passed: 1, failed: 1, skipped: 2 });
});

test('no suite needed the VM: one line, the native counts', () => {
  expect(summarise(native, 0, { kind: 'none-needed' })).toEqual({ lines: ['tests: 4 passed, 0 failed, 4 skipped'], ok: true });
});

test('a suite skipped natively and run in the VM is counted once, with its VM results', () => {
  const vm: JestReport = { testResults: [file('/r/test/e2e/vlan.test.ts', ['passed', 'passed', 'pending'])] };
  const s = summarise(native, 0, { kind: 'ran', suites: ['/r/test/e2e/vlan.test.ts'], rc: 0, report: vm, seconds: 300 });
  expect(s.lines).toEqual([
    'native: 4 passed, 0 failed, 1 skipped',
    'vm: 2 passed, 0 failed, 1 skipped (1 suite in one vmrun call, 300 s)',
    'tests: 6 passed, 0 failed, 2 skipped',
  ]);
  expect(s.ok).toBe(true);
});

test('a VM failure fails the run: failed tests, a non-zero vmrun, or no report at all', () => {
  const suites = ['/r/test/e2e/vlan.test.ts'];
  const failing: JestReport = { testResults: [file(suites[0], ['passed', 'failed', 'passed'])] };
  const withFailure = summarise(native, 0, { kind: 'ran', suites, rc: 1, report: failing, seconds: undefined });
  expect(withFailure.lines.at(-1)).toBe('tests: 6 passed, 1 failed, 1 skipped');
  expect(withFailure.ok).toBe(false);
  const passingReport: JestReport = { testResults: [file(suites[0], ['passed', 'passed', 'passed'])] };
  expect(summarise(native, 0, { kind: 'ran', suites, rc: 124, report: passingReport, seconds: undefined }).ok).toBe(false);
  const noReport = summarise(native, 0, { kind: 'ran', suites, rc: 125, report: undefined, seconds: undefined });
  expect(noReport.lines.at(-1)).toBe('tests: 4 passed, 3 failed, 1 skipped');
  expect(noReport.lines[1]).toContain('vmrun exited 125');
  expect(noReport.ok).toBe(false);
});

test('without vmrun the suites stay skipped, once, and the run passes', () => {
  const s = summarise(native, 0, { kind: 'no-vmrun', suites: ['/r/test/e2e/vlan.test.ts'] });
  expect(s.lines.at(-1)).toBe('tests: 4 passed, 0 failed, 4 skipped');
  expect(s.lines[1]).toMatch(/^vm: not run/);
  expect(s.ok).toBe(true);
});

test('a native failure fails the run whatever the VM did', () => {
  expect(summarise(native, 1, { kind: 'none-needed' }).ok).toBe(false);
});

test('as make runs it: node strips the types, reads the reports and the suite list, exits 1 on a failure', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-summary-'));
  try {
    const write = (name: string, content: unknown): string => {
      const p = path.join(dir, name);
      fs.writeFileSync(p, typeof content === 'string' ? content : JSON.stringify(content));
      return p;
    };
    const nativeFile = write('native.json', native);
    const suites = write('suites', '/r/test/e2e/vlan.test.ts\n/r/test/e2e/vlan.test.ts\n');
    const vmFile = write('vm.json', { testResults: [file('/r/test/e2e/vlan.test.ts', ['passed', 'passed', 'passed'])] });
    const script = path.resolve(__dirname, '..', 'summary.ts');
    const out = execFileSync(process.execPath, ['--disable-warning=MODULE_TYPELESS_PACKAGE_JSON', script, nativeFile, '0', suites, vmFile, '0', '42'], { encoding: 'utf8' });
    expect(out.trim().split('\n')).toEqual([
      'native: 4 passed, 0 failed, 1 skipped',
      'vm: 3 passed, 0 failed, 0 skipped (1 suite in one vmrun call, 42 s)',
      'tests: 7 passed, 0 failed, 1 skipped',
    ]);
    let failedRc = 0;
    try {
      execFileSync(process.execPath, ['--disable-warning=MODULE_TYPELESS_PACKAGE_JSON', script, nativeFile, '0', suites, path.join(dir, 'missing.json'), '125'], { encoding: 'utf8', stdio: 'pipe' });
    } catch (e) {
      failedRc = (e as { status: number }).status;
    }
    expect(failedRc).toBe(1);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
