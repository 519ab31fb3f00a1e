import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BUSYBOX_IMAGE } from '../harness/busybox';
import { containerIp, ownLinks, ping, storeRows } from '../harness/containers';
import { eventually, patient, runOk, type RunResult } from '../harness/exec';
import { describeE2E } from '../harness/host';
import { REPO_ROOT, setupE2E } from '../harness/tsnet';
import { makeWire, type Wire, wireTag } from '../harness/wire';

/**
 * examples/compose.yml (the file the README shows) brought up with Debian's docker-compose (v1) against a private
 * dockerd and the suite's tsnet: its ipam config and fixed addresses as asked, the macvlan network's containers on the
 * parent's segment, and the two services reaching each other by name; `down` leaves tsnet holding nothing.
 */
jest.setTimeout(patient(180_000));

const COMPOSE_FILE = path.join(REPO_ROOT, 'examples', 'compose.yml');
const hasCompose = fs.existsSync('/usr/bin/docker-compose');

interface LinkAddr {
  ifname: string;
  linkinfo?: { info_kind?: string };
  addr_info?: Array<{ local: string }>;
}

(hasCompose ? describeE2E : describe.skip)('compose (docker-compose v1, examples/compose.yml)', () => {
  // Registered before setupE2E's, so it runs before dockerd and tsnet go: down even if a test failed.
  afterAll(async () => {
    if (wire) await compose(['down', '--timeout', '1']).catch(() => undefined);
    await wire?.remove();
  });
  const env = setupE2E();
  const project = `tsc${randomBytes(3).toString('hex')}`;
  let wire: Wire | undefined;
  let configDir: string;

  const compose = (args: string[]): Promise<RunResult> => {
    if (!wire) throw new Error('no parent wire');
    const vars = { TSNET_DRIVER: env.name, TSNET_PARENT: wire.parent, TSNET_IMAGE: BUSYBOX_IMAGE };
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DOCKER_') && !k.startsWith('COMPOSE_')));
    return runOk('docker-compose', ['-p', project, '-f', COMPOSE_FILE, ...args], {
      timeoutMs: patient(120_000),
      env: { ...base, ...vars, DOCKER_HOST: `unix://${env.docker.socket}`, DOCKER_CONFIG: configDir },
    });
  };
  /** The container compose made for `service` (`<project>_<service>_1`). */
  const container = (service: string) => `${project}_${service}_1`;
  const net = (name: string) => `${project}_${name}`;

  beforeAll(async () => {
    configDir = fs.mkdtempSync(path.join(env.dockerd.dir, 'compose-'));
    wire = await makeWire(wireTag(), { lanAddrs: ['10.248.0.2/24'] });
  });

  test('up: networks with the ipam config asked, fixed addresses, a macvlan leg on the parent', async () => {
    await compose(['up', '-d']);
    const front = JSON.parse(await env.docker.docker(['network', 'inspect', net('front'), '-f', '{{json .IPAM}}'])) as {
      Driver: string;
      Config: Array<{ Subnet: string; IPRange: string; Gateway: string; AuxiliaryAddresses: Record<string, string> }>;
    };
    expect(front.Driver).toBe(env.name);
    expect(front.Config).toEqual([{ Subnet: '10.247.0.0/16', IPRange: '10.247.5.0/24', Gateway: '10.247.5.254', AuxiliaryAddresses: { router: '10.247.5.1' } }]);
    expect(await env.docker.docker(['network', 'inspect', net('lan'), '-f', '{{.Driver}} {{index .Options "mode"}}'])).toBe(`${env.name} macvlan`);

    expect(await containerIp(env, container('web'), net('front'))).toBe('10.247.5.10');
    expect(await containerIp(env, container('client'), net('lan'))).toBe('10.248.0.20');
    // Allocated from the range, never the gateway or the aux address.
    const clientFront = await containerIp(env, container('client'), net('front'));
    expect(clientFront).toMatch(/^10\.247\.5\.\d+$/);
    expect(['10.247.5.1', '10.247.5.254', '10.247.5.10']).not.toContain(clientFront);

    // The lan leg is a macvlan link on the parent: a LAN machine on the parent's far end reaches it.
    const pid = await env.docker.docker(['inspect', '-f', '{{.State.Pid}}', container('client')]);
    const links = JSON.parse((await runOk('nsenter', ['-t', pid, '-n', 'ip', '-d', '-json', 'addr', 'show'])).stdout) as LinkAddr[];
    const lanLeg = links.find((l) => l.addr_info?.some((a) => a.local === '10.248.0.20'));
    expect(lanLeg?.linkinfo?.info_kind).toBe('macvlan');
    if (!wire) throw new Error('no parent wire');
    expect(await wire.reaches('10.248.0.20')).toBe(true);
  });

  test('the two services resolve and ping each other by name, on the bridge and the macvlan network', async () => {
    expect(await ping(env, container('client'), 'web')).toBe(true);
    expect(await ping(env, container('web'), 'client')).toBe(true);
    const webLan = await containerIp(env, container('web'), net('lan'));
    expect(webLan).toMatch(/^10\.248\.0\.\d+$/);
    expect(await ping(env, container('client'), webLan)).toBe(true);
    // Control: a name compose never made does not resolve (the pings above used the embedded DNS, not luck).
    expect(await ping(env, container('client'), 'nosuchservice')).toBe(false);
  });

  test('down removes the containers and both networks from dockerd and from tsnet', async () => {
    expect(storeRows(env)).toMatchObject({ network: 2, endpoint: 4 });
    await compose(['down', '--timeout', '1']);
    expect(await env.docker.docker(['network', 'ls', '--filter', `name=${project}`, '-q'])).toBe('');
    await eventually(() => expect(storeRows(env)).toEqual({}), patient(10_000));
    expect(await ownLinks(env)).toEqual([]);
  });
});
