import { randomBytes } from 'node:crypto';
import type { Scenario } from '../harness/crash';
import { crashSweepTests, FULL_SWEEP, useParentVeth } from '../harness/crash-suite';
import { patient } from '../harness/exec';
import { describeKernel } from '../harness/kernel';
import { setupE2E } from '../harness/tsnet';

/**
 * The crash-point sweep (crash-points.test.ts) for macvlan on an 802.1Q subinterface tsnet makes and owns
 * (`-o parent=<veth>.100`): the parent's creation and deletion are crash points too. Needs VLAN links: `make test`
 * runs it in the VM where the kernel has none. CI crashes at the last step of CreateNetwork and DeleteNetwork (the parent's creation and deletion); `make
 * crash-sweep` takes every step.
 */
const tag = randomBytes(2).toString('hex');
const lower = `tscv${tag}a`;

const scenarios = (): Scenario[] => [
  { name: 'macvlan-vlan', network: ['-o', 'mode=macvlan', '-o', `parent=${lower}.100`, '--subnet', '10.197.35.0/24'], run: [], hostPorts: [] },
];

describeKernel(['vlan'], 'crash points on an 802.1Q parent', () => {
  const env = setupE2E({ dockerd: { iptables: true }, tsnet: false });
  useParentVeth(lower, `tscv${tag}b`);
  crashSweepTests(env, scenarios, { 'macvlan-vlan': ['NetworkDriver.CreateNetwork', 'NetworkDriver.DeleteNetwork'] }, patient(FULL_SWEEP ? 3_600_000 : 900_000), scenarios().map((s) => s.name));
});
