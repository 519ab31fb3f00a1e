/**
 * One complete read of Docker's API for reclaiming: the daemon's identity, tsnet's networks by ID and every network
 * using tsnet's driver or IPAM, each with its IPAM configuration and endpoints. Any failure rejects the whole read
 * (a partial view would make live things look forgotten).
 */
import type { DockerClient } from '../docker/client';
import type { NetworkDetail } from '../docker/contract';
import { type DockerView, isDriverName } from './decide';

/** Network inspections at once. */
const CONCURRENCY = 8;

export async function readDocker(client: DockerClient, networkIds: string[], driverName: string, signal?: AbortSignal): Promise<DockerView> {
  await client.negotiate(signal);
  const [daemon, list] = await Promise.all([client.info(signal), client.listNetworks(signal)]);
  const ids = new Set(networkIds);
  // A list entry without IPAM (not seen from a real daemon) is inspected too: its IPAM may be tsnet's.
  for (const n of list) if (isDriverName(n.driver, driverName) || n.ipamDriver === undefined || isDriverName(n.ipamDriver, driverName)) ids.add(n.id);
  const todo = [...ids];
  const networks: NetworkDetail[] = [];
  const worker = async (): Promise<void> => {
    for (let id = todo.pop(); id !== undefined; id = todo.pop()) {
      const n = await client.inspectNetwork(id, signal);
      if (n) networks.push(n);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, todo.length) }, worker));
  return { daemon, networks };
}
