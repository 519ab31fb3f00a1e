import { TsnetDriver } from '../../src/driver/driver';
import type { CreateNetworkRequest } from '../../src/driver/contract';
import { TsnetError } from '../../src/errors';
import type { Kernel } from '../../src/kernel/contract';
import { FakeKernel } from '../../src/kernel/fake';
import type { Store } from '../../src/store/contract';
import { SqliteStore } from '../../src/store/sqlite';

/** Shared by the driver unit tests: ids, a valid CreateNetwork request, a driver on the fake kernel. */
export const NID = 'a'.repeat(64);
export const NID2 = 'c'.repeat(64);
export const EID = 'b'.repeat(64);
export const EID2 = 'd'.repeat(64);

export function netReq(over: Partial<CreateNetworkRequest> = {}): CreateNetworkRequest {
  return {
    networkId: NID,
    driverOptions: {},
    enableIPv6: false,
    internal: false,
    ipv4: [{ addressSpace: 'tsnet-local', pool: '172.28.0.0/16', gateway: '172.28.5.254/16', auxAddresses: { r: '172.28.5.1/16' } }],
    ipv6: [],
    ...over,
  };
}

export async function setup() {
  const store = new SqliteStore(':memory:');
  const kernel = new FakeKernel();
  const driver = await TsnetDriver.load(store, kernel);
  return { store, kernel, driver };
}

export async function expectCode(p: Promise<unknown>, code: string): Promise<TsnetError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TsnetError);
  expect((err as TsnetError).code).toBe(code);
  return err as TsnetError;
}

/**
 * Kill points for crash tests: `store` and `kernel` wrapped so that each store commit and kernel batch (the reaper's
 * included) counts as one, and the one numbered `killAt` never returns (the process died there, before it ran); once
 * dead, every later call of the old driver hangs too, so nothing of it runs beside the restarted one. `points()` says
 * how many were passed.
 */
export function dying(store: Store, kernel: FakeKernel, killAt = Infinity) {
  let seen = 0;
  let dead = false;
  const dies = () => dead || (dead = seen++ === killAt);
  const hang = () => new Promise<never>(() => undefined);
  const dyingKernel: Kernel = {
    apply: (changes) => (dies() ? hang() : kernel.apply(changes)),
    links: () => kernel.links(),
    link: (name) => kernel.link(name),
    routes: (v6) => kernel.routes(v6),
    readSysctl: (key) => kernel.readSysctl(key),
    firewall: kernel.firewall,
    owner: kernel.owner,
    get background() {
      return dyingKernel;
    },
  };
  const dyingStore: Store = {
    all: (c) => store.all(c),
    commit: (ops) => (dies() ? hang() : store.commit(ops)),
    close: () => store.close(),
  };
  return { store: dyingStore, kernel: dyingKernel, points: () => seen, dead: () => dead };
}
