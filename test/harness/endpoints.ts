/**
 * Who holds which endpoint and address: dockerd (`docker inspect` of containers) and the suite's tsnet (its store,
 * read-only while it runs), so a test can check after restarts that the two agree record for record.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Docker } from './dockerd';
import type { E2EEnv } from './tsnet';

/** One network attachment of a container as dockerd reports it. */
export interface DockerEndpoint {
  container: string;
  network: string;
  networkId: string;
  endpointId: string;
  /** IPv4 address without prefix. */
  address: string;
}

export interface DockerView {
  endpoints: DockerEndpoint[];
  /** Containers of those asked for that are not running. */
  notRunning: string[];
}

interface InspectedContainer {
  Name: string;
  State: { Running: boolean };
  NetworkSettings: { Networks: Record<string, { NetworkID: string; EndpointID: string; IPAddress: string }> };
}

/** `docker inspect` of `containers`: their running state and every attachment that has an endpoint. */
export async function dockerView(docker: Docker, containers: readonly string[]): Promise<DockerView> {
  const inspected = JSON.parse(await docker.docker(['inspect', ...containers])) as InspectedContainer[];
  return {
    notRunning: inspected.filter((c) => !c.State.Running).map((c) => c.Name.replace(/^\//, '')),
    endpoints: inspected.flatMap((c) =>
      Object.entries(c.NetworkSettings.Networks)
        .filter(([, n]) => n.EndpointID !== '')
        .map(([network, n]) => ({ container: c.Name.replace(/^\//, ''), network, networkId: n.NetworkID, endpointId: n.EndpointID, address: n.IPAddress })),
    ),
  };
}

/** tsnet's endpoint records (`id networkId address`, sorted) and the container addresses its IPAM holds (sorted). */
export function tsnetState(env: E2EEnv): { endpoints: string[]; addresses: string[] } {
  const db = new Database(path.join(env.dockerd.dir, 'tsnet', 'state', 'tsnet.db'), { readonly: true, fileMustExist: true });
  try {
    const values = (collection: string) =>
      (db.prepare('SELECT value FROM records WHERE collection = ?').all(collection) as Array<{ value: string }>).map((r) => JSON.parse(r.value) as Record<string, unknown>);
    const bare = (cidr: unknown) => String(cidr).replace(/\/\d+$/, '');
    return {
      endpoints: values('endpoint')
        .map((e) => `${String(e.id)} ${String(e.networkId)} ${bare(e.address)}`)
        .sort(),
      addresses: values('address')
        .filter((a) => a.kind === 'address')
        .map((a) => bare(a.address))
        .sort(),
    };
  } finally {
    db.close();
  }
}
