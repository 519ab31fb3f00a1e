import fs from 'node:fs';
import { FuzzApp } from '../fuzz/app';
import { CHILD } from '../fuzz/app';
import { fuzzAll, type MethodResult } from '../fuzz/check';

/**
 * Property-based fuzzing of every remote API method over a real socket (bench/fuzz.ts runs the same with 100,000+
 * bodies). Fixed seed: a failure is reproducible, and the report lists method, body and reply.
 */
const SEED = 20261201;
const PER_METHOD = Number(process.env.FUZZ_PER_METHOD ?? 2_000);

let results: MethodResult[];
beforeAll(async () => {
  results = await fuzzAll(() => FuzzApp.start(), PER_METHOD, SEED);
}, 600_000);

test(`every method got ${PER_METHOD} bodies, some accepted, and every property held`, () => {
  for (const r of results) expect({ method: r.method, bodies: r.bodies }).toEqual({ method: r.method, bodies: PER_METHOD });
  const failures = results.flatMap((r) => r.failures);
  if (process.env.FUZZ_REPORT) fs.writeFileSync(process.env.FUZZ_REPORT, JSON.stringify(failures, null, 1));
  expect(failures.slice(0, 20)).toEqual([]);
});

test('the fuzz also drives state: valid calls are accepted for the state-changing methods', () => {
  for (const m of ['NetworkDriver.CreateNetwork', 'NetworkDriver.CreateEndpoint', 'IpamDriver.RequestPool', 'IpamDriver.RequestAddress']) {
    expect(results.find((r) => r.method === m)!.accepted).toBeGreaterThan(0);
  }
});

test('valid calls reach the child-link modes: macvlan and ipvlan networks, a VLAN tsnet makes, the seeded macvlan network', () => {
  const accepted = (m: string) => results.find((r) => r.method === m)!.acceptedBodies;
  const created = accepted('NetworkDriver.CreateNetwork');
  expect(created.some((b) => b.includes('"mode":"macvlan"'))).toBe(true);
  expect(created.some((b) => b.includes('"mode":"ipvlan"'))).toBe(true);
  expect(created.some((b) => b.includes('"parent":"eth1.20"'))).toBe(true);
  for (const m of ['NetworkDriver.CreateEndpoint', 'NetworkDriver.Join', 'NetworkDriver.Leave', 'NetworkDriver.DeleteEndpoint']) {
    expect({ m, reached: accepted(m).some((b) => b.includes(CHILD.networkId)) }).toEqual({ m, reached: true });
  }
});
