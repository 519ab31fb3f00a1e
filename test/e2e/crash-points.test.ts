import { randomBytes } from 'node:crypto';
import type { Scenario } from '../harness/crash';
import { crashSweepTests, FULL_SWEEP, useParentVeth } from '../harness/crash-suite';
import { describeE2E } from '../harness/host';
import { setupE2E } from '../harness/tsnet';

/**
 * Fault injection at every step (issue 10, item 4): tsnet killed (SIGKILL, by its test-only switch, src/fault.ts)
 * right after its k-th kernel change, firewall change or store commit during network create, run -d -p, stop, rm
 * and network rm through a real dockerd, restarted, then checked (test/harness/crash.ts).
 *
 * CI runs a sample (~4 min): bridge-ports-v6 at the last step of each NetworkDriver call, macvlan at that of
 * CreateNetwork and Join; the other scenarios are skipped there. `make crash-sweep` (TSNET_CRASH_SWEEP=full) runs
 * every step of every scenario (~20 s a crash point: 44 + 30 + 36 + 19 steps).
 * The VLAN variant (a parent tsnet makes) is crash-points-vlan.test.ts, run in the VM.
 */
const tag = randomBytes(2).toString('hex');
const parent = `tscp${tag}a`;

const scenarios = (): Scenario[] => [
  {
    name: 'bridge-ports-v6',
    network: ['--ipv6', '--subnet', '10.197.31.0/24', '--subnet', 'fd00:197:31::/64'],
    run: ['-p', '18731:80', '-p', '18732:81/udp'],
    hostPorts: [18731],
  },
  { name: 'bridge-internal', network: ['--internal', '--subnet', '10.197.32.0/24'], run: [], hostPorts: [] },
  { name: 'bridge-noicc', network: ['-o', 'com.docker.network.bridge.enable_icc=false', '--subnet', '10.197.33.0/24'], run: ['-p', '18733:80'], hostPorts: [18733] },
  { name: 'macvlan', network: ['-o', 'mode=macvlan', '-o', `parent=${parent}`, '--subnet', '10.197.34.0/24'], run: [], hostPorts: [] },
];

const DRIVER_CALLS = ['CreateNetwork', 'CreateEndpoint', 'Join', 'ProgramExternalConnectivity', 'RevokeExternalConnectivity', 'Leave', 'DeleteEndpoint', 'DeleteNetwork'].map((c) => `NetworkDriver.${c}`);
const CI_SAMPLE = { 'bridge-ports-v6': DRIVER_CALLS, macvlan: ['NetworkDriver.CreateNetwork', 'NetworkDriver.Join'] };

describeE2E('crash points', () => {
  const env = setupE2E({ dockerd: { iptables: true }, tsnet: false });
  useParentVeth(parent, `tscp${tag}b`);
  crashSweepTests(env, scenarios, CI_SAMPLE, FULL_SWEEP ? 3_600_000 : 600_000, scenarios().map((s) => s.name));
});
