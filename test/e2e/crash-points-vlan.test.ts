import { randomBytes } from 'node:crypto';
import type { Scenario } from '../harness/crash';
import { crashSweepTests, FULL_SWEEP, useParentVeth } from '../harness/crash-suite';
import { patient } from '../harness/exec';
import { describeKernel } from '../harness/kernel';
import { setupE2E } from '../harness/tsnet';

/**
 * The crash-point sweep (crash-points.test.ts) for macvlan on an 802.1Q subinterface tsnet makes and owns
 * (`-o parent=<veth>.100`): the parent's creation and deletion are crash points too. Needs VLAN links: `make test`
 * runs it in the VM where the kernel has none. Only `make crash-sweep` (every step) or TSNET_CRASH_POINTS runs it; CI
 * does not (the VLAN parent's creation and deletion as kill points are in test/unit/driver-pending.test.ts).
 */
const tag = randomBytes(2).toString('hex');
const lower = `tscv${tag}a`;

const scenarios = (): Scenario[] => [
  { name: 'macvlan-vlan', network: ['-o', 'mode=macvlan', '-o', `parent=${lower}.100`, '--subnet', '10.197.35.0/24'], run: [], hostPorts: [] },
];

// CI keeps to the native sample (its time budget); the VM's software CPU makes each point here minutes long.
const SWEPT = FULL_SWEEP || process.env.TSNET_CRASH_POINTS !== undefined;
(SWEPT ? describeKernel : skipped)(['vlan'], 'crash points on an 802.1Q parent', () => {
  const env = setupE2E({ dockerd: { iptables: true }, tsnet: false });
  useParentVeth(lower, `tscv${tag}b`);
  crashSweepTests(env, scenarios, { 'macvlan-vlan': ['NetworkDriver.CreateNetwork', 'NetworkDriver.DeleteNetwork'] }, patient(FULL_SWEEP ? 3_600_000 : 900_000), scenarios().map((s) => s.name));
});

/** Registered as skipped, saying why (no kernel probe, no VM listing). */
function skipped(_features: readonly string[], name: string, fn: () => void): void {
  describe.skip(`${name} (make crash-sweep or TSNET_CRASH_POINTS runs it)`, fn);
}
