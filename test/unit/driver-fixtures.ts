import { TsnetDriver } from '../../src/driver/driver';
import type { CreateNetworkRequest } from '../../src/driver/contract';
import { TsnetError } from '../../src/errors';
import { FakeKernel } from '../../src/kernel/fake';
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
