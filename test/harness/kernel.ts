/**
 * Which link kinds the running kernel can create, and {@link describeKernel}: e2e suites that need 802.1Q VLAN,
 * ipvlan or dummy links run where the kernel has them and are otherwise skipped with the reason; `make test` then
 * runs them inside a VM (`vmrun`) when it can.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import { runSync } from './exec';
import { describeE2E, e2eSkipReason } from './host';

export type KernelFeature = 'vlan' | 'ipvlan' | 'dummy';

const FEATURE_NAMES: Record<KernelFeature, string> = { vlan: '802.1Q VLAN links', ipvlan: 'ipvlan links', dummy: 'dummy links' };

/**
 * Set by `make test`: the file the native run appends the path of every suite skipped for a missing kernel
 * feature to, so the same make run can hand exactly those suites to one vmrun call.
 */
export const VM_SUITES_ENV = 'TSNET_VM_SUITES';

function ip(args: string[]): { ok: boolean; error: string } {
  const r = runSync('ip', args);
  return { ok: r.code === 0, error: r.stderr.trim() || `exit code ${r.code}` };
}

/**
 * Creates a veth pair with names unique to this run, then a VLAN and an ipvlan child on it and a dummy link, and
 * deletes them all again (deleting the veth takes its children along). Synchronous: jest registers suites
 * synchronously, and the answer decides whether a suite is registered at all.
 */
function probe(): Map<KernelFeature, string | undefined> {
  const base = `tkp${randomBytes(3).toString('hex')}`; // ≤ 15 characters with the longest suffix below
  const veth = `${base}a`;
  const created = ip(['link', 'add', veth, 'type', 'veth', 'peer', 'name', `${base}b`]);
  if (!created.ok) {
    const why = `cannot make the veth pair to probe on: ${created.error}`;
    return new Map([
      ['vlan', why],
      ['ipvlan', why],
      ['dummy', why],
    ]);
  }
  const result = new Map<KernelFeature, string | undefined>();
  try {
    const tries: Array<[KernelFeature, string[]]> = [
      ['vlan', ['link', 'add', 'link', veth, 'name', `${veth}.100`, 'type', 'vlan', 'id', '100']],
      ['ipvlan', ['link', 'add', 'link', veth, 'name', `${base}i`, 'type', 'ipvlan', 'mode', 'l2']],
      ['dummy', ['link', 'add', `${base}d`, 'type', 'dummy']],
    ];
    for (const [feature, args] of tries) {
      const r = ip(args);
      result.set(feature, r.ok ? undefined : r.error);
    }
  } finally {
    ip(['link', 'del', veth]);
    ip(['link', 'del', `${base}d`]);
  }
  return result;
}

let probed: Map<KernelFeature, string | undefined> | undefined;

/** The features of `wanted` this kernel cannot create, each with ip's error; probed once per test file. */
export function missingKernelFeatures(wanted: readonly KernelFeature[]): Array<{ feature: KernelFeature; error: string }> {
  probed ??= probe();
  const found = probed;
  return wanted.flatMap((feature) => {
    const error = found.get(feature);
    return error === undefined ? [] : [{ feature, error }];
  });
}

/** The path of the test file being loaded (jest sets it before it requires the file). */
function currentTestFile(): string {
  const file = expect.getState().testPath;
  if (file === undefined) throw new Error('describeKernel: no test file is being loaded');
  return file;
}

/**
 * {@link describeE2E} for suites that also need kernel features: registered as skipped, saying which feature is
 * missing and how `make test` runs the suite anyway, when the kernel lacks one. Under `make test` the suite's file
 * is then listed for the VM run ({@link VM_SUITES_ENV}).
 */
export function describeKernel(features: readonly KernelFeature[], name: string, fn: () => void): void {
  // Without root or dockerd the suite is skipped for that reason already, and a VM would not help (vmrun needs root).
  const missing = e2eSkipReason() === undefined ? missingKernelFeatures(features) : [];
  if (missing.length === 0) {
    describeE2E(name, fn);
    return;
  }
  const what = missing.map((m) => `${FEATURE_NAMES[m.feature]} (${m.error})`).join(', ');
  console.warn(
    `skipping "${name}": kernel ${os.release()} cannot create ${what}; ` +
      'make test runs this suite in a VM when ../shared/tools/vmrun (or $VMRUN) exists',
  );
  const listFile = process.env[VM_SUITES_ENV];
  if (listFile) fs.appendFileSync(listFile, `${currentTestFile()}\n`);
  describe.skip(name, fn);
}
