import type { CreateNetworkRequest } from '../../src/driver/contract';
import type { TsnetDriver } from '../../src/driver/driver';
import type { FakeKernel } from '../../src/kernel/fake';
import { NID, expectCode, netReq, setup } from './driver-fixtures';

/** Shared by the macvlan, ipvlan and parent tests: child-link network requests and a host NIC. */

export const SANDBOX = '/var/run/docker/netns/child';

/** A network of `mode` on `parent` (none: the network's own dummy) with 192.168.10.0/24, gateway .1. */
export function childReq(
  mode: 'macvlan' | 'ipvlan',
  parent: string | undefined,
  over: Partial<CreateNetworkRequest> = {},
  options: Record<string, string> = {},
): CreateNetworkRequest {
  return netReq({
    ipv4: [{ addressSpace: 'tsnet-local', pool: '192.168.10.0/24', gateway: '192.168.10.1/24', auxAddresses: {} }],
    ...over,
    driverOptions: { mode, ...(parent !== undefined ? { parent } : {}), ...options },
  });
}

/** A host NIC tsnet did not create: up, no master, no owner tag. */
export function addNic(kernel: FakeKernel, name: string, over: { up?: boolean; master?: string } = {}): void {
  kernel.addForeignLink(name, '');
  const l = kernel.linkMap.get(name)!;
  l.up = over.up ?? true;
  if (over.master !== undefined) l.master = over.master;
}

export async function endpoint(driver: TsnetDriver, endpointId: string, address: string, networkId = NID, macAddress?: string) {
  return driver.createEndpoint({ networkId, endpointId, iface: { address, ...(macAddress ? { macAddress } : {}) }, options: {} });
}

export async function dualStackEndpoint(driver: TsnetDriver, endpointId: string, address: string, addressIPv6: string) {
  return driver.createEndpoint({ networkId: NID, endpointId, iface: { address, addressIPv6 }, options: {} });
}

export async function join(driver: TsnetDriver, endpointId: string, networkId = NID) {
  return driver.join({ networkId, endpointId, sandboxKey: SANDBOX, options: {} });
}

/** A driver on the fake kernel with host NIC eth1, and the network `req` created on it. */
export async function setupOn(req: CreateNetworkRequest) {
  const s = await setup();
  addNic(s.kernel, 'eth1');
  await s.driver.createNetwork(req);
  return s;
}

/** `req` on a host with eth1 is refused as TSN_INVALID_OPTION matching `re`, and nothing changes: kernel or store. */
export async function expectRefusedOnEth1(req: CreateNetworkRequest, re: RegExp): Promise<void> {
  const { store, kernel, driver } = await setup();
  addNic(kernel, 'eth1');
  const err = await expectCode(driver.createNetwork(req), 'TSN_INVALID_OPTION');
  expect(err.message).toMatch(re);
  expect(kernel.applied).toEqual([]);
  expect(await store.all('network')).toEqual([]);
  expect(await store.all('parent')).toEqual([]);
}
