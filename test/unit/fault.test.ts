import { TsnetDriver } from '../../src/driver/driver';
import { TsnetError } from '../../src/errors';
import { type FaultSwitch, faultSwitchFromEnv, withFaults } from '../../src/fault';
import { type KernelChange, KernelChangeError } from '../../src/kernel/contract';
import { FakeKernel } from '../../src/kernel/fake';
import { withLogContext } from '../../src/log';
import { put } from '../../src/store/contract';
import { SqliteStore } from '../../src/store/sqlite';
import { EID, NID, netReq } from './driver-fixtures';

/** Thrown by the injected kill: stops the caller the way SIGKILL stops the process. */
class Killed extends Error {}

const changes: KernelChange[] = [
  { op: 'bridge.add', name: 'tsbr-one' },
  { op: 'addr.add', dev: 'tsbr-one', cidr: '10.9.0.1/24' },
  { op: 'link.up', name: 'tsbr-one' },
];

/** A counted fake kernel and in-memory store; `atKill` runs when the switch fires (then the caller is stopped). */
function wrapped(exitAfter: number | undefined, atKill: () => void = () => undefined) {
  const trace: string[] = [];
  const kills: number[] = [];
  const raw = { kernel: new FakeKernel(), store: new SqliteStore(':memory:') };
  const sw: FaultSwitch = {
    ...(exitAfter !== undefined ? { exitAfter } : {}),
    trace: (line) => trace.push(line),
    kill: () => {
      kills.push(trace.length);
      atKill();
      throw new Killed(`killed after step ${trace.length}`);
    },
  };
  return { raw, ...withFaults(raw.kernel, raw.store, sw), trace, kills };
}

describe('switch from the environment', () => {
  test('unset: no wrapper at all (the very objects come back)', () => {
    expect(faultSwitchFromEnv({})).toBeUndefined();
    const kernel = new FakeKernel();
    const store = new SqliteStore(':memory:');
    const out = withFaults(kernel, store, faultSwitchFromEnv({ TSNET_DNS_PORT: '53' }));
    expect(out.kernel).toBe(kernel);
    expect(out.store).toBe(store);
  });

  test.each(['0', '-1', 'x', '1.5', ''])('TSNET_FAULT_EXIT_AFTER=%j is refused', (value) => {
    expect(() => faultSwitchFromEnv({ TSNET_FAULT_EXIT_AFTER: value })).toThrow(TsnetError);
  });

  test('k and the trace file are read', () => {
    const sw = faultSwitchFromEnv({ TSNET_FAULT_EXIT_AFTER: '7' });
    expect(sw?.exitAfter).toBe(7);
    expect(sw?.trace).toBeUndefined();
    expect(faultSwitchFromEnv({ TSNET_FAULT_TRACE: '/tmp/x' })?.exitAfter).toBeUndefined();
  });
});

describe('counting', () => {
  test('each change of one apply counts on its own; the kill comes right after the k-th, before the next starts', async () => {
    let appliedAtKill: KernelChange[] = [];
    const w = wrapped(2, () => (appliedAtKill = [...w.raw.kernel.applied]));
    await expect(w.kernel.apply(changes)).rejects.toThrow(Killed);
    expect(appliedAtKill).toEqual(changes.slice(0, 2));
    expect(w.raw.kernel.applied).toEqual(changes.slice(0, 2));
    expect(w.trace).toEqual(['1 kernel bridge.add tsbr-one -', '2 kernel addr.add tsbr-one 10.9.0.1/24 -']);
    expect(w.kills).toEqual([2]);
  });

  test('without k it only traces, and the kernel ends as the unwrapped one would', async () => {
    const w = wrapped(undefined);
    await w.kernel.apply(changes);
    expect(w.raw.kernel.applied).toEqual(changes);
    expect(w.trace).toHaveLength(3);
    expect(w.kills).toEqual([]);
  });

  test('a failing change is reported at its index in the whole list, with what went before counted as applied', async () => {
    const w = wrapped(undefined);
    w.raw.kernel.failOn((c) => c.op === 'addr.add');
    const err: unknown = await w.kernel.apply(changes).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KernelChangeError);
    expect((err as KernelChangeError).index).toBe(1);
    expect((err as KernelChangeError).applied).toBe(1);
    expect((err as KernelChangeError).change).toEqual(changes[1]);
    // The failed change is not a completed step.
    expect(w.trace).toEqual(['1 kernel bridge.add tsbr-one -']);
  });

  test('firewall calls, store commits and the background lane share one sequence; the plugin call is named', async () => {
    const w = wrapped(undefined);
    await withLogContext({ call: 'NetworkDriver.CreateNetwork' }, async () => {
      await w.store.commit([put('tombstone', 'tsv000000000001', { link: 'tsv000000000001', createdAt: 'now' })]);
      await w.kernel.firewall.addNetwork({ bridge: 'tsbr-one', internal: false, icc: true, masquerade: true });
    });
    await w.kernel.background.apply([{ op: 'dummy.add', name: 'tsdm-x' }]);
    await w.kernel.background.background.apply([{ op: 'link.del', name: 'tsdm-x' }]);
    // An empty commit writes nothing: not a step.
    await w.store.commit([]);
    expect(w.trace).toEqual([
      '1 store put:tombstone/tsv000000000 NetworkDriver.CreateNetwork',
      '2 firewall addNetwork NetworkDriver.CreateNetwork',
      '3 kernel-bg dummy.add tsdm-x -',
      '4 kernel-bg link.del tsdm-x -',
    ]);
    // The wrapped parts still are what they wrap.
    expect(w.raw.kernel.firewall.networks.has('tsbr-one')).toBe(true);
    expect(await w.raw.store.all('tombstone')).toHaveLength(1);
    expect(w.kernel.owner).toBe('tsnet:test');
  });

  test('a driver on the wrapped parts: every kernel change, firewall call and commit of CreateNetwork + CreateEndpoint is one step', async () => {
    const w = wrapped(undefined);
    const driver = await TsnetDriver.load(w.store, w.kernel);
    await driver.createNetwork(netReq({ driverOptions: { 'com.docker.network.bridge.enable_icc': 'false' } }));
    await driver.createEndpoint({ networkId: NID, endpointId: EID, iface: { address: '172.28.5.2/16' }, options: {} });
    const kernelSteps = w.trace.filter((l) => / kernel /.test(l)).length;
    const firewallSteps = w.trace.filter((l) => / firewall /.test(l)).length;
    expect(kernelSteps).toBe(w.raw.kernel.applied.length);
    // FakeFirewall records every call it gets: all of them change the table.
    expect(firewallSteps).toBe(w.raw.kernel.firewall.calls.length);
    expect(firewallSteps).toBeGreaterThan(0);
    expect(w.trace.filter((l) => / store /.test(l)).length).toBeGreaterThanOrEqual(2);
  });

  test('the k-th step of a CreateNetwork is the same step at every k (the sweep relies on it)', async () => {
    const full = wrapped(undefined);
    await (await TsnetDriver.load(full.store, full.kernel)).createNetwork(netReq());
    const n = full.trace.length;
    expect(n).toBeGreaterThan(3);
    for (let k = 1; k <= n; k++) {
      const w = wrapped(k);
      const driver = await TsnetDriver.load(w.store, w.kernel);
      // The injected kill throws where SIGKILL would stop everything, so the driver's rollback may trace more.
      await expect(driver.createNetwork(netReq())).rejects.toThrow();
      expect(w.kills).toEqual([k]);
      expect(w.trace.slice(0, k)).toEqual(full.trace.slice(0, k));
    }
  });
});
