import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { API_NEWEST, DockerClient, negotiateVersion } from '../../src/docker/client';
import { LineSplitter, parseEventLine, Backoff } from '../../src/docker/events';
import { TsnetError } from '../../src/errors';
import { FakeDocker, type FakeContainer } from '../harness/fake-docker';

const NET_ID = 'a'.repeat(64);
const CID = '0123456789ab' + 'c'.repeat(52);

function sample(): Omit<FakeContainer, 'running'> {
  return {
    id: CID,
    name: 'Web-1',
    hostname: 'webhost',
    networks: { front: { networkId: NET_ID, ipv4: '10.9.0.2', ipv6: 'fd00::2', aliases: ['WWW', 'web'] } },
  };
}

const fakes: FakeDocker[] = [];
async function fake(apiVersion: string, minApiVersion: string): Promise<FakeDocker> {
  const f = new FakeDocker({ apiVersion, minApiVersion });
  fakes.push(f);
  await f.start();
  return f;
}

afterEach(async () => {
  for (const f of fakes.splice(0)) await f.destroy();
});

describe('negotiateVersion', () => {
  test('speaks the older of the server and tsnet', () => {
    expect(negotiateVersion('1.41', '1.12')).toBe('1.41');
    expect(negotiateVersion('1.52', '1.44')).toBe(API_NEWEST);
    expect(negotiateVersion('1.100', '1.44')).toBe(API_NEWEST);
  });

  test('refuses a server older than 1.41, and one whose minimum is above what tsnet knows', () => {
    expect(() => negotiateVersion('1.40', '1.12')).toThrow(/too old: tsnet needs 1.41/);
    // numerically, not as text ('1.9' > '1.41' as strings)
    expect(() => negotiateVersion('1.9', '1.9')).toThrow(/too old/);
    expect(() => negotiateVersion('2.0', '1.60')).toThrow(/requires API 1.60/);
    expect(() => negotiateVersion('x', undefined)).toThrow(TsnetError);
  });
});

describe('DockerClient against the fake daemon', () => {
  test('dockerd 20.10 (1.41): later calls are /v1.41/ and parse the 20.10 shape', async () => {
    const f = await fake('1.41', '1.12');
    f.run(sample());
    const c = new DockerClient({ socketPath: f.socketPath });
    expect(await c.negotiate()).toBe('1.41');
    expect(await c.listContainerIds()).toEqual([CID]);
    expect(f.requests).toContain('/v1.41/containers/json');
    expect(f.requests[0]).toBe('/version');
  });

  test('Engine 29 (min 1.44): negotiates 1.47, which it accepts, while 1.41 is refused', async () => {
    const f = await fake('1.52', '1.44');
    f.run(sample());
    const old = new DockerClient({ socketPath: f.socketPath });
    Reflect.set(old, 'version', '1.41');
    await expect(old.listContainerIds()).rejects.toThrow(/400: client version 1.41 is too old/);
    const c = new DockerClient({ socketPath: f.socketPath });
    expect(await c.negotiate()).toBe('1.47');
    expect(await c.listContainerIds()).toEqual([CID]);
  });

  test('a container reads the same from the 1.41, 1.44 and 1.47 shapes (short ID kept, own name and hostname not)', async () => {
    const infos = [];
    for (const v of ['1.41', '1.44', '1.47']) {
      const f = await fake(v, '1.12');
      f.run(sample());
      const c = new DockerClient({ socketPath: f.socketPath });
      await c.negotiate();
      infos.push(await c.inspectContainer(CID));
    }
    expect(infos[0]).toEqual({
      id: CID,
      name: 'Web-1',
      hostname: 'webhost',
      networks: [{ networkId: NET_ID, networkName: 'front', ipv4: '10.9.0.2', ipv6: 'fd00::2', aliases: ['0123456789ab', 'web', 'www'] }],
    });
    expect(infos[1]).toEqual(infos[0]);
    expect(infos[2]).toEqual(infos[0]);
  });

  test('inspect: a missing container (404) and a stopped one are undefined', async () => {
    const f = await fake('1.41', '1.12');
    f.run(sample());
    const c = new DockerClient({ socketPath: f.socketPath });
    await c.negotiate();
    expect(await c.inspectContainer('d'.repeat(64))).toBeUndefined();
    f.stopContainer(CID);
    expect(await c.inspectContainer(CID)).toBeUndefined();
  });

  test('networks list with the internal flag', async () => {
    const f = await fake('1.41', '1.12');
    f.addNetwork({ id: NET_ID, name: 'front', driver: 'tsnet', internal: true });
    const c = new DockerClient({ socketPath: f.socketPath });
    await c.negotiate();
    expect(await c.listNetworks()).toEqual([{ id: NET_ID, name: 'front', driver: 'tsnet', internal: true }]);
  });

  test('a missing socket is TSN_DOCKER with the errno as cause', async () => {
    const f = await fake('1.41', '1.12');
    await f.stop();
    const c = new DockerClient({ socketPath: f.socketPath });
    const err: unknown = await c.negotiate().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TsnetError);
    expect((err as TsnetError).code).toBe('TSN_DOCKER');
    expect(((err as TsnetError).cause as NodeJS.ErrnoException).code).toBe('ENOENT');
  });

  test('a daemon that never answers times out; one that answers garbage is TSN_DOCKER', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-docker-silent-'));
    const sock = path.join(dir, 's.sock');
    let garbage = false;
    const server = http.createServer((_req, res) => {
      if (garbage) res.end('{"ApiVersion": 7');
      // else: never answer
    });
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      const c = new DockerClient({ socketPath: sock, timeoutMs: 50 });
      await expect(c.negotiate()).rejects.toThrow(/no answer from Docker within 50 ms/);
      garbage = true;
      await expect(c.negotiate()).rejects.toThrow(/unexpected answer from Docker/);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('event lines', () => {
  const line = JSON.stringify({ Type: 'container', Action: 'start', Actor: { ID: CID, Attributes: { name: 'x' } }, time: 5, timeNano: 5e9 });

  test('lines split at every byte are reassembled', () => {
    const got: string[] = [];
    const s = new LineSplitter(1024, (l) => got.push(l), () => got.push('OVERLONG'));
    const bytes = Buffer.from(`${line}\n${line}\n`);
    for (let i = 0; i < bytes.length; i++) s.push(bytes.subarray(i, i + 1));
    expect(got).toEqual([line, line]);
    expect(parseEventLine(got[0])).toEqual({ type: 'container', action: 'start', actorId: CID, time: 5 });
  });

  test('an overlong line is dropped whole and the next one is read', () => {
    const got: string[] = [];
    const s = new LineSplitter(100, (l) => got.push(l), () => got.push('OVERLONG'));
    s.push(Buffer.from('x'.repeat(60)));
    s.push(Buffer.from('y'.repeat(60)));
    s.push(Buffer.from('z'.repeat(60) + '\nok\n'));
    expect(got).toEqual(['OVERLONG', 'ok']);
  });

  test('malformed and foreign lines are not events', () => {
    expect(parseEventLine('{')).toBeUndefined();
    expect(parseEventLine('{"Type":"container"}')).toBeUndefined();
    expect(parseEventLine(JSON.stringify({ Type: 'image', Action: 'pull', Actor: { ID: 'x' }, time: 1 }))).toBeUndefined();
    expect(parseEventLine(JSON.stringify({ Type: 'network', Action: 'connect', Actor: { ID: NET_ID, Attributes: { container: CID } }, time: 2 }))).toEqual({
      type: 'network',
      action: 'connect',
      actorId: NET_ID,
      container: CID,
      time: 2,
    });
  });
});

describe('Backoff', () => {
  test('doubles to the cap, jitter in [d/2, d], reset starts over', () => {
    const hi = new Backoff(100, 1000, () => 1);
    expect([1, 2, 3, 4, 5, 6].map(() => hi.next())).toEqual([100, 200, 400, 800, 1000, 1000]);
    hi.reset();
    expect(hi.next()).toBe(100);
    const lo = new Backoff(100, 1000, () => 0);
    expect([1, 2, 3, 4, 5].map(() => lo.next())).toEqual([50, 100, 200, 400, 500]);
  });
});

describe('inspectNetwork and info (for reclaiming)', () => {
  test('a network with its IPAM config and endpoints, joined or not; 404 and an answer for another network are undefined', async () => {
    const f = await fake('1.47', '1.24');
    f.addNetwork({
      id: NET_ID,
      name: 'front',
      driver: 'tsnet',
      internal: false,
      ipamDriver: 'tsnet',
      ipamConfig: [{ Subnet: '10.9.0.0/16', IPRange: '', Gateway: '', AuxiliaryAddresses: { r: '10.9.0.5' } }, { Subnet: '' }],
      endpoints: { [CID]: { EndpointID: 'e'.repeat(64), IPv4Address: '10.9.0.2/16', IPv6Address: '' }, [`ep-${'f'.repeat(64)}`]: { EndpointID: 'f'.repeat(64), IPv4Address: '10.9.0.3/16' } },
    });
    // Docker resolves names too: a network named like the ID asked for is not that network.
    f.addNetwork({ id: 'b'.repeat(64), name: 'd'.repeat(64), driver: 'bridge', internal: false });
    const c = new DockerClient({ socketPath: f.socketPath });
    await c.negotiate();
    expect(await c.inspectNetwork(NET_ID)).toEqual({
      id: NET_ID,
      name: 'front',
      driver: 'tsnet',
      internal: false,
      ipamDriver: 'tsnet',
      ipamConfig: [{ subnet: '10.9.0.0/16', auxAddresses: { r: '10.9.0.5' } }],
      endpoints: [
        { endpointId: 'e'.repeat(64), ipv4: '10.9.0.2/16' },
        { endpointId: 'f'.repeat(64), ipv4: '10.9.0.3/16' },
      ],
    });
    expect(await c.inspectNetwork('c'.repeat(64))).toBeUndefined();
    const byName = 'd'.repeat(64);
    f.networks.set(byName, { ...(f.networks.get('b'.repeat(64)) ?? { id: '', name: '', driver: '', internal: false }) });
    expect(await c.inspectNetwork(byName)).toBeUndefined();
    expect(await c.info()).toEqual({ id: f.daemonId, networkDrivers: ['bridge', 'host', 'macvlan', 'null', 'tsnet'] });
    f.failing.add(`/networks/${NET_ID}`);
    await expect(c.inspectNetwork(NET_ID)).rejects.toThrow(/Docker answered 500/);
  });
});
