/**
 * The last lines of `make test`: the native jest run, the VM run of the suites this kernel cannot run (when there
 * is one), and their total. Run by node itself (type stripping: no imports but node's own), so it needs no build:
 *
 *   node --disable-warning=MODULE_TYPELESS_PACKAGE_JSON test/summary.ts NATIVE.json NATIVE_RC SUITES_FILE VM.json VM_STATE [VM_SECONDS]
 *
 * VM_STATE is vmrun's exit code, or `none` when no vmrun was found. Exits non-zero when anything failed.
 */
import fs from 'node:fs';

/** The part of jest's `--json` report this reads. */
export interface JestReport {
  testResults: Array<{
    name: string;
    /** `failed` also when the file could not run at all (then it has no assertion results). */
    status: string;
    assertionResults: Array<{ status: string }>;
  }>;
}

export interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

/** What became of the suites the native kernel could not run. */
export type VmOutcome =
  | { kind: 'none-needed' }
  | { kind: 'no-vmrun'; suites: string[] }
  | { kind: 'ran'; suites: string[]; rc: number; report: JestReport | undefined; seconds: number | undefined };

/** Test counts of the files `include` accepts; a file that could not run at all counts as one failure. */
export function countTests(report: JestReport, include: (file: string) => boolean = () => true): Counts {
  const counts: Counts = { passed: 0, failed: 0, skipped: 0 };
  for (const file of report.testResults.filter((f) => include(f.name))) {
    if (file.status === 'failed' && file.assertionResults.length === 0) counts.failed += 1;
    for (const a of file.assertionResults) {
      if (a.status === 'passed') counts.passed += 1;
      else if (a.status === 'failed') counts.failed += 1;
      else counts.skipped += 1; // pending, skipped, todo, disabled
    }
  }
  return counts;
}

function line(label: string, c: Counts): string {
  return `${label}: ${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/**
 * The summary lines (the total last) and whether the whole run passed. A suite skipped natively and run in the VM
 * is counted once, with its VM result; a VM that gave no report counts those suites' tests as failed.
 */
export function summarise(native: JestReport, nativeRc: number, vm: VmOutcome): { lines: string[]; ok: boolean } {
  if (vm.kind === 'none-needed') {
    const c = countTests(native);
    return { lines: [line('tests', c)], ok: nativeRc === 0 && c.failed === 0 };
  }
  const inVm = new Set(vm.suites);
  const nativeOnly = countTests(native, (f) => !inVm.has(f));
  const vmSuitesNatively = countTests(native, (f) => inVm.has(f));
  const suites = plural(vm.suites.length, 'suite');
  const lines = [line('native', nativeOnly)];
  let vmCounts: Counts;
  let vmOk: boolean;
  if (vm.kind === 'no-vmrun') {
    lines.push(`vm: not run (no vmrun: ../shared/tools/vmrun or $VMRUN); ${suites} needing kernel features this host lacks stay skipped`);
    vmCounts = { passed: 0, failed: 0, skipped: vmSuitesNatively.passed + vmSuitesNatively.failed + vmSuitesNatively.skipped };
    vmOk = true;
  } else if (vm.report === undefined) {
    const tests = vmSuitesNatively.passed + vmSuitesNatively.failed + vmSuitesNatively.skipped;
    lines.push(`vm: vmrun exited ${vm.rc} without a jest report; the ${plural(tests, 'test')} of its ${suites} count as failed`);
    vmCounts = { passed: 0, failed: tests, skipped: 0 };
    vmOk = false;
  } else {
    vmCounts = countTests(vm.report);
    const time = vm.seconds === undefined ? '' : `, ${vm.seconds} s`;
    lines.push(`${line('vm', vmCounts)} (${suites} in one vmrun call${time})`);
    vmOk = vm.rc === 0 && vmCounts.failed === 0;
  }
  const total: Counts = {
    passed: nativeOnly.passed + vmCounts.passed,
    failed: nativeOnly.failed + vmCounts.failed,
    skipped: nativeOnly.skipped + vmCounts.skipped,
  };
  lines.push(line('tests', total));
  return { lines, ok: nativeRc === 0 && nativeOnly.failed === 0 && vmOk };
}

function readReport(file: string): JestReport | undefined {
  return fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as JestReport) : undefined;
}

function main(args: string[]): number {
  const [nativeFile = '', nativeRc = '1', suitesFile = '', vmFile = '', vmState = 'none'] = args;
  const vmSeconds = args.at(5);
  const native = readReport(nativeFile);
  if (native === undefined) {
    console.log(`tests: no jest report (${nativeFile}): the native run did not finish`);
    return 1;
  }
  const suites = fs.existsSync(suitesFile)
    ? [
        ...new Set(
          fs
            .readFileSync(suitesFile, 'utf8')
            .split('\n')
            .filter((s) => s !== ''),
        ),
      ].sort()
    : [];
  const vm: VmOutcome =
    suites.length === 0
      ? { kind: 'none-needed' }
      : vmState === 'none'
        ? { kind: 'no-vmrun', suites }
        : { kind: 'ran', suites, rc: Number(vmState), report: readReport(vmFile), seconds: vmSeconds === undefined ? undefined : Number(vmSeconds) };
  const { lines, ok } = summarise(native, Number(nativeRc), vm);
  for (const l of lines) console.log(l);
  return ok ? 0 : 1;
}

// Run as a script (node test/summary.ts …), not when a unit test imports it.
if (process.argv.at(1)?.endsWith('summary.ts')) process.exitCode = main(process.argv.slice(2));
