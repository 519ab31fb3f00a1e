import { spawnSync } from 'node:child_process';
import { eventually, run, runOk } from '../harness/exec';
import { describeE2E, nftTableExists } from '../harness/host';
import { HostNs } from '../harness/hostns';

/**
 * Nothing exposed that the user did not publish, checked in the kernel with tsnet running inside a fresh "host"
 * namespace (test/harness/hostns.ts): no dockerd, no iptables rules, forwarding off, like a fresh host with dockerd
 * `--iptables=false`. LAN machines and containers are namespaces; the test plays dockerd over the socket.
 */
jest.setTimeout(120_000);

const BRNF = ['net/bridge/bridge-nf-call-iptables', 'net/bridge/bridge-nf-call-ip6tables', 'net/bridge/bridge-nf-call-arptables'];
const hasPython = spawnSync('python3', ['--version']).status === 0;

let h: HostNs | undefined;
afterEach(async () => {
  await h?.destroy();
  h = undefined;
});

/**
 * Sends UDP datagrams with a forged loopback source from namespace `ns` (a raw socket, as a root container can).
 * 127.0.0.2, not .1: the kernel takes a source equal to one of the host's own addresses for a martian by itself,
 * but with rp_filter=0 any other 127/8 source is let in on a route_localnet interface.
 */
async function spoofLoopbackUdp(ns: string, dst: string, port: number): Promise<void> {
  const script = `
import socket, struct
dst = socket.inet_aton(${JSON.stringify(dst)}); src = socket.inet_aton('127.0.0.2')
data = b'spoofed'
udp = struct.pack('!HHHH', 40000, ${port}, 8 + len(data), 0) + data
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src, dst)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(3): s.sendto(ip + udp, (${JSON.stringify(dst)}, 0))
`;
  await runOk('ip', ['netns', 'exec', ns, 'python3', '-c', script]);
}

/** Counts datagrams a UDP socket bound in namespace `ns` receives within `ms` while `during` runs. */
async function udpReceived(ns: string, port: number, during: () => Promise<void>): Promise<number> {
  const script = `const s=require('dgram').createSocket('udp4');let n=0;s.on('message',()=>n++);s.bind(${port},()=>process.stdout.write('ready\\n'));setTimeout(()=>{process.stdout.write(String(n));process.exit(0)},1500)`;
  const listener = run('ip', ['netns', 'exec', ns, process.execPath, '-e', script], { timeoutMs: 10_000 });
  await eventually(async () => expect((await run('ip', ['netns', 'exec', ns, 'ss', '-lunH', `sport = :${port}`])).stdout).toContain(`:${port}`), 5_000, 50);
  await during();
  const out = (await listener).stdout.trim().split('\n');
  return Number(out[out.length - 1]);
}

describeE2E('exposure: nothing reachable that was not published (tsnet in its own host namespace)', () => {
  test('item 12: forwarding tsnet turned on does not make the host a router between its other interfaces', async () => {
    h = await HostNs.create({ 'net/ipv4/ip_forward': '0' });
    const a = await h.lan('lana', 'lan0', '10.201.1', { defaultRoute: true });
    const b = await h.lan('lanb', 'lan1', '10.201.2', { defaultRoute: true });
    await h.serve(b.ns, 7000, 'b');
    // Control: forwarding on without a guard routes A to B (what the test must catch).
    await h.sysctl('net/ipv4/ip_forward', '1');
    expect(await h.tcp(a.ns, b.peerIp, 7000)).toBe('b');
    await h.sysctl('net/ipv4/ip_forward', '0');

    const net = await h.network('10.88.1');
    expect(await h.sysctl('net/ipv4/ip_forward')).toBe('1');
    expect(await h.tcp(a.ns, b.peerIp, 7000)).toBeUndefined();
    expect(await h.ping(a.ns, b.peerIp)).toBe(false);
    // A tsnet container still reaches the LAN (outbound NAT), and the host itself still reaches both.
    const c = await h.container(net, 2);
    expect(await h.tcp(c.ns, b.peerIp, 7000)).toBe('b');
    expect(await h.tcp(h.ns, b.peerIp, 7000)).toBe('b');

    // Restart (forwarding already 1, set by tsnet) and removal of the last network: the guard stays.
    await h.tsnet.restart();
    expect(await h.tcp(a.ns, b.peerIp, 7000)).toBeUndefined();
    await h.call('NetworkDriver.Leave', { NetworkID: net.id, EndpointID: c.endpointId });
    await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: net.id, EndpointID: c.endpointId });
    await h.call('NetworkDriver.DeleteNetwork', { NetworkID: net.id });
    await eventually(async () => expect(await h!.exec('ip', ['-o', 'link', 'show'])).not.toContain(net.bridge), 10_000, 100);
    expect(await h.tcp(a.ns, b.peerIp, 7000)).toBeUndefined();
    expect(await h.exec('nft', ['list', 'set', 'inet', h.tsnet.name, 'fwdguard'])).toMatch(/elements = \{ ipv4 \}/);
  });

  test('item 10: a port published on 127.0.0.1 is not reachable from the LAN via the host\'s MAC; the host still reaches it', async () => {
    h = await HostNs.create();
    const a = await h.lan('lana', 'lan0', '10.202.1', { defaultRoute: true });
    const net = await h.network('10.88.2');
    const c = await h.container(net, 2);
    await h.serve(c.ns, 80, 'local-only');
    await h.publish(c, 80, 8080, '127.0.0.1');
    expect(await h.tcp(h.ns, '127.0.0.1', 8080)).toBe('local-only');
    // The neighbour sends to 127.0.0.1 through the host: its own loopback out of the way, route_localnet so its
    // kernel puts a 127/8 destination on the wire
    // (its own loopback gone, so the host's replies from 127.0.0.1 are not martians to it).
    await a.exec('sh', ['-c', 'ip addr flush dev lo && ip link set lo down && sysctl -qw net.ipv4.conf.eth0.route_localnet=1 net.ipv4.conf.all.route_localnet=1']);
    await a.exec('ip', ['route', 'add', '127.0.0.1/32', 'via', a.hostIp, 'dev', 'eth0']);
    expect(await h.tcp(a.ns, '127.0.0.1', 8080)).toBeUndefined();
    // Control: without the loopback-destination drop the same connection reaches the container.
    const handle = /ip daddr 127\.0\.0\.0\/8 iifname != "lo" drop # handle (\d+)/.exec(await h.exec('nft', ['-a', 'list', 'chain', 'inet', h.tsnet.name, 'localnet']))?.[1];
    expect(handle).toBeDefined();
    await h.exec('nft', ['delete', 'rule', 'inet', h.tsnet.name, 'localnet', 'handle', handle!]);
    expect(await h.tcp(a.ns, '127.0.0.1', 8080)).toBe('local-only');
    await h.tsnet.restart();
    expect(await h.tcp(a.ns, '127.0.0.1', 8080)).toBeUndefined();
    expect(await h.tcp(h.ns, '127.0.0.1', 8080)).toBe('local-only');
  });

  (hasPython ? test : test.skip)('item 11: a container cannot reach host services with a forged 127/8 source (route_localnet on its bridge)', async () => {
    h = await HostNs.create({ 'net/ipv4/conf/all/rp_filter': '0', 'net/ipv4/conf/default/rp_filter': '0' });
    const net = await h.network('10.88.3');
    const c = await h.container(net, 2);
    expect(await h.sysctl(`net/ipv4/conf/${net.bridge}/route_localnet`)).toBe('1');
    // ARP for the gateway would carry the forged source too and go unanswered: the container pins the neighbour.
    const mac = (JSON.parse(await h.exec('ip', ['-json', 'link', 'show', net.bridge])) as Array<{ address: string }>)[0].address;
    await c.exec('ip', ['neigh', 'replace', '10.88.3.1', 'lladdr', mac, 'dev', 'eth0', 'nud', 'permanent']);
    expect(await udpReceived(h.ns, 9999, () => spoofLoopbackUdp(c.ns, '10.88.3.1', 9999))).toBe(0);
    // Control: without the loopback-source drop the kernel (route_localnet) delivers them.
    const handle = /ip saddr 127\.0\.0\.0\/8 iifname @bridges drop # handle (\d+)/.exec(await h.exec('nft', ['-a', 'list', 'chain', 'inet', h.tsnet.name, 'localnet']))?.[1];
    // tsnet frozen: its drift repair would restore the rule before the forged packets arrive.
    const host = h;
    await host.tsnet.frozen(async () => {
      await host.exec('nft', ['delete', 'rule', 'inet', host.tsnet.name, 'localnet', 'handle', handle!]);
      expect(await udpReceived(host.ns, 9999, () => spoofLoopbackUdp(c.ns, '10.88.3.1', 9999))).toBeGreaterThan(0);
    });
  });

  // 0: br_netfilter off (dockerd --iptables=false, a fresh host); 1: on, as dockerd --iptables=true leaves it, where
  // a hairpin to a neighbour's published port is bridged after DNAT, not routed.
  test.each(['0', '1'])('item 13: enable_icc=false holds with br_netfilter\'s bridge-nf-call-* at %s; published ports stay reachable', async (value) => {
    h = await HostNs.create(Object.fromEntries(BRNF.map((k) => [k, value])));
    for (const k of BRNF) expect(await h.sysctl(k)).toBe(value);
    const a = await h.lan('lana', 'lan0', '10.203.1', { defaultRoute: true });
    await h.serve(a.ns, 7000, 'lan');
    const open = await h.network('10.88.4');
    const o1 = await h.container(open, 2);
    const o2 = await h.container(open, 3);
    await h.serve(o2.ns, 80, 'o2');
    // Control: on an icc=true network the same two containers talk.
    expect(await h.tcp(o1.ns, o2.ip, 80)).toBe('o2');

    const closed = await h.network('10.88.5', { 'com.docker.network.bridge.enable_icc': 'false' });
    const d1 = await h.container(closed, 2);
    const d2 = await h.container(closed, 3);
    await h.serve(d2.ns, 80, 'd2');
    await h.publish(d2, 80, 8090);
    expect(await h.tcp(d1.ns, d2.ip, 80)).toBeUndefined();
    expect(await h.ping(d1.ns, d2.ip)).toBe(false);
    // The gateway, the outside, and the other's published port through a host address (routed hairpin) still work.
    expect(await h.ping(d1.ns, '10.88.5.1')).toBe(true);
    expect(await h.tcp(d1.ns, a.peerIp, 7000)).toBe('lan');
    expect(await h.tcp(d1.ns, a.hostIp, 8090)).toBe('d2');
    expect(await h.tcp(a.ns, a.hostIp, 8090)).toBe('d2');
  });

  test('item 14: a br-lan uplink stays reachable; a bridge named like Docker\'s (br-<12 hex>) is cut, also when it appears later', async () => {
    h = await HostNs.create();
    const uplink = await h.lan('lanu', 'lanu0', '10.204.1', { defaultRoute: true, hostBridge: 'br-lan' });
    await h.serve(uplink.ns, 7000, 'uplink');
    const net = await h.network('10.88.6');
    const c = await h.container(net, 2);
    expect(await h.tcp(c.ns, uplink.peerIp, 7000)).toBe('uplink');
    // Docker's naming rule; created after the network, so only the link watcher can add it to the set.
    const docker = await h.lan('land', 'land0', '10.204.2', { defaultRoute: true, hostBridge: 'br-0123456789ab' });
    await h.serve(docker.ns, 7000, 'docker');
    expect(await h.tcp(h.ns, docker.peerIp, 7000)).toBe('docker');
    await eventually(async () => expect(await h!.exec('nft', ['list', 'set', 'inet', h!.tsnet.name, 'dockerbr'])).toContain('"br-0123456789ab"'), 10_000, 100);
    expect(await h.tcp(c.ns, docker.peerIp, 7000)).toBeUndefined();
    expect(await h.tcp(c.ns, uplink.peerIp, 7000)).toBe('uplink');
  });

  test('item 8: after the table is deleted behind tsnet\'s back, the next network create and publish work and the table is back', async () => {
    h = await HostNs.create();
    const a = await h.lan('lana', 'lan0', '10.205.1', { defaultRoute: true });
    const n1 = await h.network('10.88.7');
    const c1 = await h.container(n1, 2);
    await h.exec('nft', ['delete', 'table', 'inet', h.tsnet.name]);
    const n2 = await h.network('10.88.8');
    const c2 = await h.container(n2, 2);
    await h.serve(c2.ns, 80, 'c2');
    await h.publish(c2, 80, 8081);
    await h.serve(c1.ns, 80, 'c1');
    await h.publish(c1, 80, 8082);
    const table = await h.exec('nft', ['list', 'table', 'inet', h.tsnet.name]);
    expect(table).toContain(n1.bridge);
    expect(table).toContain(n2.bridge);
    expect(await h.tcp(a.ns, a.hostIp, 8081)).toBe('c2');
    expect(await h.tcp(a.ns, a.hostIp, 8082)).toBe('c1');
    // The rebuilt table isolates the first network again (it came back with the rebuild, not with its own change).
    expect(await h.tcp(c2.ns, c1.ip, 80)).toBeUndefined();
    expect(await nftTableExists('inet', h.tsnet.name)).toBe(false); // the real host never saw it
  });
});
