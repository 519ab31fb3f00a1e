import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { BUSYBOX_IMAGE } from '../harness/busybox';
import { eventually, run, runOk, sleep, spawnDaemon, terminate } from '../harness/exec';
import { describeE2E, nftTableExists } from '../harness/host';
import { makePeer, type Peer, removePeer } from '../harness/lan';
import { type E2EEnv, pluginCall, setupE2E } from '../harness/tsnet';

/**
 * Bridge networks reaching the world (roadmap step 2) through the docker CLI: outbound NAT, published ports from the
 * LAN, the host and a neighbour container, isolation. A "LAN client" and an "outside" server are namespaces wired
 * to the host by veths; no traffic leaves the machine.
 */
jest.setTimeout(180_000);

/**
 * The node running these tests (the pinned runtime under `make test`, not necessarily /usr/bin/node), mounted into
 * the busybox containers with the host's libraries it links: a UDP echo server and an HTTP client busybox lacks.
 */
const NODE_MOUNTS = ['-v', `${process.execPath}:/node:ro`, '-v', '/usr/lib:/lib:ro', '-v', '/usr/lib64:/lib64:ro'];
const HTTPD = ['sh', '-c', 'mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && exec httpd -f -p 80 -h /www'];
const UDP_ECHO = ['/node', '-e', "const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>s.send('pong '+m,r.port,r.address));s.bind(5353)"];

/** Runs a Node snippet on the host or in a namespace; its stdout, or undefined when it exits non-zero. */
async function nodeIn(peer: Peer | undefined, script: string): Promise<string | undefined> {
  const argv = [process.execPath, '-e', script];
  const res = peer ? await run('ip', ['netns', 'exec', peer.ns, ...argv], { timeoutMs: 10_000 }) : await run(argv[0], argv.slice(1), { timeoutMs: 10_000 });
  return res.code === 0 ? res.stdout.trim() : undefined;
}

/** A Node HTTP GET printing the body (busybox-static's wget crashes in name resolution, even for addresses). */
const getScript = (url: string) =>
  `require('http').get(${JSON.stringify(url)},{timeout:3000},r=>{let b='';r.on('data',d=>b+=d);r.on('end',()=>process.stdout.write(b))}).on('error',()=>process.exit(2)).on('timeout',()=>process.exit(3))`;

/** HTTP GET from the host or from a namespace; the body or undefined. */
function wget(url: string, peer?: Peer): Promise<string | undefined> {
  return nodeIn(peer, getScript(url));
}

/** HTTP GET from inside a container (started with NODE_MOUNTS); the body or undefined. */
async function cget(env: E2EEnv, container: string, url: string): Promise<string | undefined> {
  const res = await env.docker.dockerTry(['exec', container, '/node', '-e', getScript(url)]);
  return res.code === 0 ? res.stdout.trim() : undefined;
}

/** One UDP round trip from a namespace (three tries); the reply text or undefined. */
async function udpPing(peer: Peer, host: string, port: number): Promise<string | undefined> {
  const script = `const s=require('dgram').createSocket('udp4');setTimeout(()=>process.exit(3),2000);s.on('message',m=>{process.stdout.write(String(m));process.exit(0)});s.send('ping',${port},'${host}')`;
  for (let i = 0; i < 3; i++) {
    const reply = await nodeIn(peer, script);
    if (reply !== undefined) return reply;
  }
  return undefined;
}

async function containerIp(env: E2EEnv, name: string, network: string): Promise<string> {
  return env.docker.docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, name]);
}

/** Host ports tsnet chose for a container's endpoint on `network` (dockerd 20.10 cannot show them: see README). */
async function publishedPorts(env: E2EEnv, name: string, network: string): Promise<Array<{ hostPort: number; proto: string; hostIp?: string }>> {
  const netId = await env.docker.docker(['network', 'inspect', '-f', '{{.Id}}', network]);
  const epId = await env.docker.docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").EndpointID}}`, name]);
  const res = await pluginCall(env.tsnet.socket, 'NetworkDriver.EndpointOperInfo', { NetworkID: netId, EndpointID: epId });
  return ((res.body as { Value: { publishedPorts?: Array<{ hostPort: number; proto: string; hostIp?: string }> } }).Value.publishedPorts ?? []);
}

async function canPing(env: E2EEnv, from: string, ip: string): Promise<boolean> {
  return (await env.docker.dockerTry(['exec', from, 'ping', '-c', '1', '-W', '2', ip])).code === 0;
}

function suite(iptables: boolean): void {
  const env = setupE2E({ dockerd: { iptables } });
  let lan: Peer;
  let out: Peer;
  let server: ChildProcess | undefined;
  let server6: ChildProcess | undefined;
  const net = (name: string, subnet: string, ...opts: string[]) =>
    env.docker.docker(['network', 'create', '-d', env.name, '--ipam-driver', env.name, '--subnet', subnet, ...opts, name]);
  const runC = (name: string, args: string[], cmd: string[] = ['sleep', '3600']) =>
    env.docker.docker(['run', '-d', '--name', name, ...NODE_MOUNTS, ...args, BUSYBOX_IMAGE, ...cmd]);

  beforeAll(async () => {
    lan = await makePeer('tsnet-lan', 'lanh0', '10.213.0', { defaultRoute: true, prefix64: 'fd00:213::' });
    out = await makePeer('tsnet-out', 'outh0', '10.214.0', { prefix64: 'fd00:214::' });
    // The outside server answers with the address it sees the client as.
    server = spawnDaemon('ip', ['netns', 'exec', out.ns, process.execPath, '-e', "require('http').createServer((q,s)=>s.end(q.socket.remoteAddress)).listen(8000,'10.214.0.2')"], {
      logFile: path.join(env.dockerd.dir, 'outside-server.log'),
    });
    server6 = spawnDaemon('ip', ['netns', 'exec', out.ns, process.execPath, '-e', "require('http').createServer((q,s)=>s.end(q.socket.remoteAddress)).listen(8001,'fd00:214::2')"], {
      logFile: path.join(env.dockerd.dir, 'outside-server6.log'),
    });
    await eventually(async () => expect(await wget('http://10.214.0.2:8000/', out)).toBe('10.214.0.2'), 10_000, 100);
    await eventually(async () => expect(await wget('http://[fd00:214::2]:8001/', out)).toBe('fd00:214::2'), 10_000, 100);
  });
  afterAll(async () => {
    if (server) await terminate(server, 2_000);
    if (server6) await terminate(server6, 2_000);
    // Unassigned when beforeAll failed early.
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition
    if (out) await removePeer(out);
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition
    if (lan) await removePeer(lan);
  });
  afterEach(async () => {
    await env.docker.removeAllContainers();
    await env.docker.removeCustomNetworks();
  });

  test('outbound NAT: the outside server sees the host address; with masquerade off it sees the container', async () => {
    await net('natnet', '172.28.0.0/16');
    await runC('client', ['--network', 'natnet']);
    expect(await cget(env, 'client', 'http://10.214.0.2:8000/')).toBe('10.214.0.1');

    await net('rawnet', '172.29.0.0/16', '-o', 'com.docker.network.bridge.enable_ip_masquerade=false');
    await runC('raw', ['--network', 'rawnet']);
    // The outside server can only answer an un-NATed client if it knows the way back.
    await out.exec('ip', ['route', 'add', '172.29.0.0/16', 'via', out.hostIp]);
    try {
      const ip = await containerIp(env, 'raw', 'rawnet');
      expect(await cget(env, 'raw', 'http://10.214.0.2:8000/')).toBe(ip);
    } finally {
      await out.exec('ip', ['route', 'del', '172.29.0.0/16']);
    }
  });

  test('published TCP and UDP ports: from the LAN, the host (127.0.0.1 and its own address) and a neighbour (hairpin)', async () => {
    await net('pub', '172.28.0.0/16');
    await runC('web', ['--network', 'pub', '-p', '8080:80'], HTTPD);
    await runC('udp', ['--network', 'pub', '-p', '5353:5353/udp'], UDP_ECHO);
    await runC('neighbour', ['--network', 'pub']);
    const hello = /^hello from /;
    await eventually(async () => expect(await wget(`http://${lan.hostIp}:8080/`, lan)).toMatch(hello), 10_000, 200);
    expect(await wget('http://127.0.0.1:8080/')).toMatch(hello);
    expect(await wget(`http://${lan.hostIp}:8080/`)).toMatch(hello);
    expect(await cget(env, 'neighbour', `http://${lan.hostIp}:8080/`)).toMatch(hello);
    await eventually(async () => expect(await udpPing(lan, lan.hostIp, 5353)).toBe('pong ping'), 10_000, 200);

    // Stopping the container unpublishes: nothing answers any more, and the host port is free again.
    await env.docker.docker(['rm', '-f', 'web']);
    expect(await wget(`http://${lan.hostIp}:8080/`, lan)).toBeUndefined();
    await runC('web2', ['--network', 'pub', '-p', '8080:80'], HTTPD);
    await eventually(async () => expect(await wget(`http://${lan.hostIp}:8080/`, lan)).toMatch(hello), 10_000, 200);
  });

  test('host IP bindings: 127.0.0.1 only, 127.0.0.1 with a host port tsnet picks, -P, and a port range', async () => {
    await net('bind', '172.28.0.0/16');
    await runC('local', ['--network', 'bind', '-p', '127.0.0.1:8081:80'], HTTPD);
    await runC('ephem', ['--network', 'bind', '-p', '127.0.0.1::80'], HTTPD);
    await runC('all', ['--network', 'bind', '--expose', '80', '-P'], HTTPD);
    await runC('range', ['--network', 'bind', '-p', '8090-8095:80'], HTTPD);
    await eventually(async () => expect(await wget('http://127.0.0.1:8081/')).toMatch(/hello/), 10_000, 200);
    expect(await wget(`http://${lan.hostIp}:8081/`, lan)).toBeUndefined();

    const [ephem] = await publishedPorts(env, 'ephem', 'bind');
    expect(ephem).toMatchObject({ proto: 'tcp', hostIp: '127.0.0.1' });
    expect(await wget(`http://127.0.0.1:${ephem.hostPort}/`)).toMatch(/hello/);

    const [all] = await publishedPorts(env, 'all', 'bind');
    expect(all.hostIp).toBeUndefined();
    expect(await wget(`http://${lan.hostIp}:${all.hostPort}/`, lan)).toMatch(/hello/);

    const [range] = await publishedPorts(env, 'range', 'bind');
    expect(range.hostPort).toBeGreaterThanOrEqual(8090);
    expect(range.hostPort).toBeLessThanOrEqual(8095);
    expect(await wget(`http://${lan.hostIp}:${range.hostPort}/`, lan)).toMatch(/hello/);
  });

  test('a host port in use and an address not on this host are refused with the reason', async () => {
    await net('bad', '172.28.0.0/16');
    const busy = spawnDaemon(process.execPath, ['-e', "require('net').createServer().listen(8099,'0.0.0.0')"], { logFile: path.join(env.dockerd.dir, 'busy.log') });
    try {
      await eventually(async () => expect((await run('ss', ['-ltnH', 'sport = :8099'])).stdout).toMatch(/8099/), 5_000, 100);
      const inUse = await env.docker.dockerTry(['run', '-d', '--name', 'clash', '--network', 'bad', '-p', '8099:80', BUSYBOX_IMAGE, 'sleep', '60']);
      expect(inUse.code).not.toBe(0);
      expect(inUse.stderr).toMatch(/0\.0\.0\.0:8099\/tcp is already in use/);
    } finally {
      await terminate(busy, 2_000);
    }
    const foreign = await env.docker.dockerTry(['run', '-d', '--name', 'foreign', '--network', 'bad', '-p', '203.0.113.7:8098:80', BUSYBOX_IMAGE, 'sleep', '60']);
    expect(foreign.code).not.toBe(0);
    expect(foreign.stderr).toMatch(/203\.0\.113\.7/);
  });

  test('isolation: --internal, enable_icc=false, two tsnet networks, a Docker bridge network', async () => {
    await net('inner', '172.28.0.0/16', '--internal');
    await runC('in1', ['--network', 'inner', '-p', '8085:80'], HTTPD);
    await runC('in2', ['--network', 'inner']);
    expect(await canPing(env, 'in2', await containerIp(env, 'in1', 'inner'))).toBe(true);
    expect(await cget(env, 'in1', 'http://10.214.0.2:8000/')).toBeUndefined();
    expect(await wget(`http://${lan.hostIp}:8085/`, lan)).toBeUndefined();

    await net('noicc', '172.29.0.0/16', '-o', 'com.docker.network.bridge.enable_icc=false');
    await runC('q1', ['--network', 'noicc', '-p', '8084:80'], HTTPD);
    await runC('q2', ['--network', 'noicc']);
    const q1 = await containerIp(env, 'q1', 'noicc');
    expect(await canPing(env, 'q2', q1)).toBe(false);
    expect(await cget(env, 'q2', `http://${q1}:80/`)).toBeUndefined();
    // Like Docker's: a published port stays reachable through the host, for a neighbour too.
    await eventually(async () => expect(await cget(env, 'q2', `http://${lan.hostIp}:8084/`)).toMatch(/^hello/), 10_000, 200);
    expect(await cget(env, 'q1', 'http://10.214.0.2:8000/')).toBe('10.214.0.1');

    await net('left', '172.30.0.0/16');
    await net('right', '172.31.0.0/16');
    await runC('l1', ['--network', 'left']);
    await runC('r1', ['--network', 'right']);
    await runC('both', ['--network', 'left']);
    await env.docker.docker(['network', 'connect', 'right', 'both']);
    const r1 = await containerIp(env, 'r1', 'right');
    const l1 = await containerIp(env, 'l1', 'left');
    expect(await canPing(env, 'l1', r1)).toBe(false);
    expect(await canPing(env, 'r1', l1)).toBe(false);
    expect(await canPing(env, 'both', r1)).toBe(true);
    expect(await canPing(env, 'both', l1)).toBe(true);

    await env.docker.docker(['network', 'create', '-d', 'bridge', '--subnet', '10.215.0.0/24', 'dockers']);
    await runC('d1', ['--network', 'dockers']);
    const d1 = await containerIp(env, 'd1', 'dockers');
    expect(await canPing(env, 'l1', d1)).toBe(false);
    expect(await canPing(env, 'd1', l1)).toBe(false);
  });

  test('IPv6: a port published on an --ipv6 network answers over IPv6 and IPv4; IPv6 leaves NATed', async () => {
    await net('six', '172.28.0.0/16', '--ipv6', '--subnet', 'fd00:7473:28::/64');
    await runC('web6', ['--network', 'six', '-p', '8088:80'], HTTPD);
    await eventually(async () => expect(await wget(`http://[${lan.hostIp6}]:8088/`, lan)).toMatch(/^hello/), 10_000, 200);
    expect(await wget(`http://${lan.hostIp}:8088/`, lan)).toMatch(/^hello/);
    expect(await cget(env, 'web6', 'http://[fd00:214::2]:8001/')).toBe('fd00:214::1');
  });

  test('a ruleset lost while tsnet is down comes back when tsnet starts', async () => {
    await net('lost', '172.28.0.0/16');
    await runC('kept', ['--network', 'lost', '-p', '8089:80'], HTTPD);
    await eventually(async () => expect(await wget(`http://${lan.hostIp}:8089/`, lan)).toMatch(/^hello/), 10_000, 200);
    // Killed first: a running tsnet's firewall watcher restores a deleted table within ~0.1 s (firewall-drift.test.ts),
    // which would race the check that the port is really cut off.
    await env.tsnet.kill9();
    await runOk('nft', ['delete', 'table', 'inet', env.name]);
    expect(await wget(`http://${lan.hostIp}:8089/`, lan)).toBeUndefined();
    await env.tsnet.start();
    await eventually(async () => expect(await wget(`http://${lan.hostIp}:8089/`, lan)).toMatch(/^hello/), 10_000, 200);
    expect(await cget(env, 'kept', 'http://10.214.0.2:8000/')).toBe('10.214.0.1');
  });

  test('after docker rm and docker network rm the ruleset is exactly as before', async () => {
    const ruleset = async () => (await runOk('nft', ['list', 'ruleset'])).stdout.replace(/packets \d+ bytes \d+/g, '');
    // DeleteNetwork answers before the firewall base goes (a background job): let the last test's teardown settle.
    let before = await ruleset();
    for (let prev = ''; prev !== before; ) {
      prev = before;
      await sleep(500);
      before = await ruleset();
    }
    await net('rules', '172.28.0.0/16', '--ipv6', '--subnet', 'fd00:7473:28::/64');
    await runC('r1', ['--network', 'rules', '-p', '8086:80', '-p', '127.0.0.1:8087:80/udp'], HTTPD);
    expect(await nftTableExists('inet', env.name)).toBe(true);
    await env.docker.docker(['rm', '-f', 'r1']);
    await env.docker.docker(['network', 'rm', 'rules']);
    await eventually(async () => expect(await ruleset()).toBe(before));
  });
}

describeE2E('reaching the world under dockerd --iptables=true', () => suite(true));
describeE2E('reaching the world under dockerd --iptables=false', () => suite(false));
