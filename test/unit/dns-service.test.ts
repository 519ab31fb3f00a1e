import * as dnsPacket from 'dns-packet';
import type { DnsConfig } from '../../src/config';
import type { ContainerInfo, DockerFeed } from '../../src/docker/contract';
import type { DnsNetwork, Forwarder, ListenerSpec, QueryContext, QueryHandler } from '../../src/dns/contract';
import { DnsService } from '../../src/dns/service';
import { query, rdata } from './dns-fixtures';

const config: DnsConfig = { enabled: true, zone: 'tsnet', port: 53, onGateways: true, hostAddresses: ['10.99.0.53'], onInternal: false, upstreams: [], resolvConf: '/nonexistent', ttl: 5 };

/** A feed the test drives: it delivers containers when the test says Docker answered. */
class FakeFeed implements DockerFeed {
  started = 0;
  stopped = 0;
  private containers: Array<(c: ReadonlyArray<ContainerInfo>) => void> = [];
  onContainers(l: (c: ReadonlyArray<ContainerInfo>) => void): void {
    this.containers.push(l);
  }
  // The service follows networks through the driver, not the feed.
  onNetworks(): void {}
  onStatus(): void {}
  start(): void {
    this.started++;
  }
  stop(): Promise<void> {
    this.stopped++;
    return Promise.resolve();
  }
  deliver(c: ContainerInfo[]): void {
    for (const l of this.containers) l(c);
  }
}

const FRONT = '1'.repeat(64);
const SEALED = '2'.repeat(64);
const front: DnsNetwork = { id: FRONT, internal: false, subnets: ['10.31.0.0/24'], hostAddresses: ['10.31.0.1'] };
const sealed: DnsNetwork = { id: SEALED, internal: true, subnets: ['10.32.0.0/24'], hostAddresses: ['10.32.0.1'] };
const web = (ip: string, networkId = FRONT, networkName = 'front'): ContainerInfo => ({ id: 'c'.repeat(64), name: 'web', hostname: 'webhost', networks: [{ networkId, networkName, ipv4: ip, aliases: [] }] });

function harness(nets: DnsNetwork[]) {
  const feed = new FakeFeed();
  const open = new Map<string, { spec: ListenerSpec; handler: QueryHandler }>();
  const forwarded: string[] = [];
  const forwarder: Forwarder = {
    forward: (msg) => {
      forwarded.push(dnsPacket.decode(msg).questions?.[0]?.name ?? '');
      const reply = dnsPacket.decode(msg);
      return Promise.resolve(dnsPacket.encode({ ...reply, type: 'response', flags: dnsPacket.RECURSION_AVAILABLE, answers: [{ type: 'A', name: 'ext.example', ttl: 60, data: '198.51.100.7' }] }));
    },
    close: () => Promise.resolve(),
  };
  let networks = nets;
  const service = new DnsService({
    config,
    feed,
    networks: () => networks,
    forwarder,
    openListener: (spec, handler) => {
      open.set(spec.address, { spec, handler });
      return Promise.resolve({ close: () => Promise.resolve(void open.delete(spec.address)) });
    },
  });
  const ask = async (address: string, name: string, source: string) => {
    const l = open.get(address);
    if (!l) throw new Error(`no listener on ${address}`);
    const ctx: QueryContext = { transport: 'udp', source, networkId: l.spec.networkId, localAddress: address, mayForward: !l.spec.noForward };
    const reply = await l.handler(query(name, 'A'), ctx);
    if (!reply) return 'dropped';
    const d = dnsPacket.decode(reply) as dnsPacket.DecodedPacket & { rcode: string };
    return { rcode: d.rcode, answers: (d.answers ?? []).map((a) => String(rdata(a))) };
  };
  return { feed, open, forwarded, service, ask, setNetworks: (n: DnsNetwork[]) => (networks = n) };
}

const settle = () => new Promise((r) => setImmediate(r));

describe('DnsService', () => {
  test('until Docker was read, names in the zone are SERVFAIL, not NXDOMAIN; then the containers answer', async () => {
    const h = harness([front]);
    await h.service.start();
    await settle();
    expect(h.feed.started).toBe(1);
    expect(await h.ask('10.31.0.1', 'web.front.tsnet', '10.31.0.9')).toEqual({ rcode: 'SERVFAIL', answers: [] });
    h.feed.deliver([web('10.31.0.5')]);
    expect(await h.ask('10.31.0.1', 'web.front.tsnet', '10.31.0.9')).toEqual({ rcode: 'NOERROR', answers: ['10.31.0.5'] });
    expect(await h.ask('10.31.0.1', 'nobody.front.tsnet', '10.31.0.9')).toMatchObject({ rcode: 'NXDOMAIN' });
    h.feed.deliver([web('10.31.0.6')]);
    expect(await h.ask('10.99.0.53', 'web', '10.31.0.9')).toEqual({ rcode: 'NOERROR', answers: ['10.31.0.6'] });
    await h.service.stop();
  });

  test('listeners follow networks: gateways of non-internal networks and the host address; closed at stop', async () => {
    const h = harness([front, sealed]);
    await h.service.start();
    await settle();
    expect([...h.open.keys()].sort()).toEqual(['10.31.0.1', '10.99.0.53']);
    h.setNetworks([sealed, { ...front, id: '3'.repeat(64), hostAddresses: ['10.33.0.1'] }]);
    h.service.networksChanged();
    await settle();
    expect([...h.open.keys()].sort()).toEqual(['10.33.0.1', '10.99.0.53']);
    await h.service.stop();
    expect(h.open.size).toBe(0);
    expect(h.feed.stopped).toBe(1);
  });

  test('a query from an internal network subnet is never forwarded, even through the host listener (CVE-2024-29018)', async () => {
    const h = harness([front, sealed]);
    await h.service.start();
    h.feed.deliver([web('10.32.0.5', SEALED, 'sealed')]);
    await settle();
    expect(await h.ask('10.99.0.53', 'ext.example', '10.32.0.5')).toEqual({ rcode: 'REFUSED', answers: [] });
    expect(h.forwarded).toEqual([]);
    // Local names still answer from there, and another source is forwarded.
    expect(await h.ask('10.99.0.53', 'web.sealed.tsnet', '10.32.0.5')).toEqual({ rcode: 'NOERROR', answers: ['10.32.0.5'] });
    expect(await h.ask('10.99.0.53', 'ext.example', '10.31.0.9')).toEqual({ rcode: 'NOERROR', answers: ['198.51.100.7'] });
    expect(h.forwarded).toEqual(['ext.example']);
    await h.service.stop();
  });

  test('a gateway listener drops sources of macvlan/ipvlan subnets: those are the LAN\'s, whose hosts use host addresses', async () => {
    const lan: DnsNetwork = { id: '5'.repeat(64), internal: false, subnets: ['192.168.77.0/24'], hostAddresses: [] };
    const h = harness([front, lan]);
    await h.service.start();
    h.feed.deliver([web('10.31.0.5')]);
    await settle();
    expect(await h.ask('10.31.0.1', 'ext.example', '192.168.77.20')).toBe('dropped');
    expect(await h.ask('10.31.0.1', 'web.front.tsnet', '192.168.77.20')).toBe('dropped');
    expect(h.forwarded).toEqual([]);
    expect(await h.ask('10.99.0.53', 'web.front.tsnet', '192.168.77.20')).toEqual({ rcode: 'NOERROR', answers: ['10.31.0.5'] });
    await h.service.stop();
  });

  test('a link-local source is never forwarded while internal networks exist: it may be an internal container\'s own fe80:: address', async () => {
    const sealed6: DnsNetwork = { ...sealed, subnets: ['10.32.0.0/24', 'fd00:32::/64'] };
    const h = harness([front, sealed6]);
    await h.service.start();
    h.feed.deliver([web('10.31.0.5')]);
    await settle();
    for (const source of ['fe80::5', 'fe80::42:acff:fe20:5', '169.254.10.5']) {
      expect(await h.ask('10.99.0.53', 'ext.example', source)).toEqual({ rcode: 'REFUSED', answers: [] });
      expect(await h.ask('10.99.0.53', 'web.front.tsnet', source)).toEqual({ rcode: 'NOERROR', answers: ['10.31.0.5'] });
    }
    expect(h.forwarded).toEqual([]);
    await h.service.stop();
    // Without internal networks the host listener forwards for the LAN, link-local sources included.
    const lan = harness([front]);
    await lan.service.start();
    await settle();
    expect(await lan.ask('10.99.0.53', 'ext.example', 'fe80::5')).toEqual({ rcode: 'NOERROR', answers: ['198.51.100.7'] });
    await lan.service.stop();
  });

  test('a gateway listener serves only sources in tsnet subnets (containers, the host through the gateway address); the LAN uses host addresses', async () => {
    const other: DnsNetwork = { id: '4'.repeat(64), internal: false, subnets: ['10.34.0.0/24', 'fd00:34::/64'], hostAddresses: ['10.34.0.1'] };
    const h = harness([front, other]);
    await h.service.start();
    h.feed.deliver([web('10.31.0.5')]);
    await settle();
    const answered = { rcode: 'NOERROR', answers: ['10.31.0.5'] };
    expect(await h.ask('10.31.0.1', 'web.front.tsnet', '10.31.0.1')).toEqual(answered);
    expect(await h.ask('10.31.0.1', 'web.front.tsnet', '10.34.0.7')).toEqual(answered);
    expect(await h.ask('10.31.0.1', 'web.front.tsnet', 'fd00:34::7')).toEqual(answered);
    expect(await h.ask('10.31.0.1', 'web.front.tsnet', '192.0.2.50')).toBe('dropped');
    expect(await h.ask('10.31.0.1', 'ext.example', '192.0.2.50')).toBe('dropped');
    expect(h.forwarded).toEqual([]);
    expect(await h.ask('10.99.0.53', 'web.front.tsnet', '192.0.2.50')).toEqual(answered);
    await h.service.stop();
  });
});
