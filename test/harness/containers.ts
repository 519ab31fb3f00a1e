/**
 * What e2e suites ask of a running setupE2E environment through the docker CLI and the host: containers, their
 * addresses and reachability, tsnet's links and store rows, and a link's kernel details.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { BUSYBOX_IMAGE } from './busybox';
import { eventually, patient, run, runOk } from './exec';
import { linksOwnedBy } from './host';
import type { E2EEnv } from './tsnet';

/** Rows per collection in the tsnet store of `env` (read-only, while tsnet runs). */
export function storeRows(env: E2EEnv): Record<string, number> {
  const db = new Database(path.join(env.dockerd.dir, 'tsnet', 'state', 'tsnet.db'), { readonly: true, fileMustExist: true });
  try {
    // Not the Docker daemon reclaim trusts: kept by design once tsnet has read Docker (src/reclaim/).
    const rows = db.prepare("SELECT collection, count(*) AS n FROM records WHERE collection != 'trust' GROUP BY collection").all() as Array<{ collection: string; n: number }>;
    return Object.fromEntries(rows.map((r) => [r.collection, r.n]));
  } finally {
    db.close();
  }
}

/** Links this test's tsnet made, by its owner tag (other tsnets on the host have their own). */
export function ownLinks(env: E2EEnv, prefix = ''): Promise<string[]> {
  return linksOwnedBy(`tsnet:${env.name}`, prefix);
}

/** Where the CLI helpers below run docker: a setupE2E environment or another host's dockerd. */
type WithDocker = Pick<E2EEnv, 'docker'>;

/** A busybox container running `cmd` (default `sleep`), with `args` (e.g. `--network n --ip a.b.c.d`) before the image. */
export async function runDetached(env: WithDocker, name: string, args: string[], cmd: readonly string[] = ['sleep', '3600']): Promise<void> {
  await env.docker.docker(['run', '-d', '--name', name, ...args, BUSYBOX_IMAGE, ...cmd]);
}

/** The container's IPv4 address on `network`, as dockerd reports it. */
export function containerIp(env: WithDocker, container: string, network: string): Promise<string> {
  return env.docker.docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, container]);
}

/** One ping from a container (2 s to answer). */
export async function ping(env: WithDocker, from: string, target: string, v6 = false): Promise<boolean> {
  return (await env.docker.dockerTry(['exec', from, 'ping', ...(v6 ? ['-6'] : []), '-c', '1', '-W', '2', target])).code === 0;
}

/**
 * Registers an afterEach removing every container and network, then waiting until tsnet's links (deleted in the
 * background) are gone: a failed test leaves nothing in the next one's way.
 */
export function cleanAfterEach(env: E2EEnv): void {
  afterEach(async () => {
    await env.docker.removeAllContainers();
    await env.docker.removeCustomNetworks();
    await eventually(async () => expect(await ownLinks(env)).toEqual([]), patient(5_000));
  });
}

/** Whether anyone on the container's `eth0` segment answers ARP for `target` (two tries). */
export async function arping(env: E2EEnv, from: string, target: string): Promise<boolean> {
  return (await env.docker.dockerTry(['exec', from, 'arping', '-c', '2', '-w', '3', '-I', 'eth0', target])).code === 0;
}

/** What `cat FILE` prints in the container, trimmed (e.g. `/sys/class/net/eth0/address`). */
export async function catIn(env: E2EEnv, container: string, file: string): Promise<string> {
  return env.docker.docker(['exec', container, 'cat', file]);
}

/** `ip -d -json link show` of one link: kind, its lower link, VLAN id, state, alias; undefined if it does not exist. */
export interface LinkDetails {
  ifname: string;
  /** The lower link (`ip`'s `@`), e.g. the NIC under a VLAN. */
  link?: string;
  flags: string[];
  address?: string;
  ifalias?: string;
  linkinfo?: { info_kind?: string; info_data?: { id?: number; protocol?: string; mode?: string } };
}

export async function linkDetails(name: string, netns?: string): Promise<LinkDetails | undefined> {
  const r = await run('ip', [...(netns === undefined ? [] : ['-n', netns]), '-d', '-json', 'link', 'show', 'dev', name]);
  if (r.code !== 0) return undefined;
  return (JSON.parse(r.stdout) as LinkDetails[])[0];
}

/** The id of a docker network. */
export function networkId(env: E2EEnv, name: string): Promise<string> {
  return env.docker.docker(['network', 'inspect', name, '-f', '{{.Id}}']);
}

/** A veth pair made by the test (both ends down), for parents the test owns; `del()` removes it. */
export async function vethPair(a: string, b: string): Promise<{ del: () => Promise<void> }> {
  await runOk('ip', ['link', 'add', a, 'type', 'veth', 'peer', 'name', b]);
  return {
    del: async () => {
      await run('ip', ['link', 'del', a]);
    },
  };
}
