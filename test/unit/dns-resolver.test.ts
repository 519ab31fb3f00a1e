import * as dnsPacket from 'dns-packet';
import type { Forwarder, QueryContext } from '../../src/dns/contract';
import { createResolver, type Resolver } from '../../src/dns/resolver';
import { buildZone } from '../../src/dns/zone';
import { containers, ctx, decode, type Reply, NET_BACK, NET_FRONT, networks, query, rdata, type QueryOptions } from './dns-fixtures';

const ZONE = 'tsnet';

function fakeForwarder(): Forwarder & { calls: string[]; release: () => void } {
  const calls: string[] = [];
  let release = () => {};
  const gate = new Promise<void>((r) => (release = r));
  return {
    calls,
    release: () => release(),
    async forward(msg, q) {
      calls.push(q.question.name);
      await gate;
      const r = dnsPacket.decode(msg);
      return dnsPacket.encode({
        type: 'response',
        id: q.id,
        flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
        questions: r.questions,
        answers: [{ name: q.question.name, type: 'A', class: 'IN', ttl: 60, data: '93.184.216.34' }],
      });
    },
    async close() {},
  };
}

function resolver(opts: { fastPath?: boolean; forwarder?: Forwarder } = {}): Resolver {
  const r = createResolver(opts);
  r.setZone(buildZone({ zone: ZONE, ttl: 5, networks, containers, serial: 77 }));
  return r;
}

function ask(r: Resolver, name: string, type: dnsPacket.RecordType, c: QueryContext = ctx(), o: QueryOptions = {}): Reply {
  return decode(r.handle(query(name, type, o), c));
}

const datas = (p: dnsPacket.Packet) => (p.answers ?? []).map(rdata);

describe.each([true, false])('resolver (fast path %s)', (fastPath) => {
  const r = resolver({ fastPath });

  test('A and AAAA for NAME.NETWORK.ZONE and NAME.NETWORK, authoritative, with the TTL', () => {
    const p = ask(r, 'web.front.tsnet', 'A');
    expect(p).toMatchObject({ rcode: 'NOERROR', flag_aa: true });
    expect(p.answers).toEqual([expect.objectContaining({ name: 'web.front.tsnet', type: 'A', ttl: 5, data: '172.30.0.2' })]);
    expect(datas(ask(r, 'WEB.front', 'AAAA'))).toEqual(['fd00:30::2']);
    expect(datas(ask(r, 'web.back.tsnet', 'A'))).toEqual(['172.31.0.2']);
    expect(datas(ask(r, 'api-host.back', 'A'))).toEqual(['172.31.0.3']);
  });

  test('a bare NAME on a host listener: all networks; on a network listener: that network first', () => {
    expect(datas(ask(r, 'web', 'A')).sort()).toEqual(['172.30.0.2', '172.31.0.2']);
    expect(datas(ask(r, 'web', 'A', ctx({ networkId: NET_BACK })))).toEqual(['172.31.0.2']);
    expect(datas(ask(r, 'web.tsnet', 'A', ctx({ networkId: NET_FRONT })))).toEqual(['172.30.0.2']);
    // api exists only on back: asked on front's listener it still answers
    expect(datas(ask(r, 'api', 'A', ctx({ networkId: NET_FRONT })))).toEqual(['172.31.0.3']);
  });

  test('an alias shared by several containers: all addresses, order rotated per query', () => {
    const orders = [0, 1, 2, 3].map(() => datas(ask(r, 'shared', 'A')));
    expect([...orders[0]].sort()).toEqual(['172.30.0.2', '172.30.0.4', '172.31.0.3']);
    expect(orders[1]).toEqual([...orders[0].slice(1), orders[0][0]]);
    expect(orders[2]).toEqual([...orders[1].slice(1), orders[1][0]]);
    expect(orders[3]).toEqual(orders[0]);
    expect([...datas(ask(r, 'shared.front.tsnet', 'A'))].sort()).toEqual(['172.30.0.2', '172.30.0.4']);
  });

  test('the fast path keeps at most cacheBytes of encoded replies (one per rotation of a big alias); rotation goes on', () => {
    const crowd = Array.from({ length: 200 }, (_, i) => ({
      id: `${i}`.padStart(64, 'd'),
      name: `d${i}`,
      hostname: `dh${i}`,
      networks: [{ networkId: NET_FRONT, networkName: 'front', ipv4: `172.30.1.${i + 1}`, aliases: ['crowd'] }],
    }));
    const big = createResolver({ fastPath, cacheBytes: 50_000 });
    big.setZone(buildZone({ zone: ZONE, ttl: 5, networks, containers: [...containers, ...crowd], serial: 1 }));
    const firsts: string[] = [];
    for (let i = 0; i < 800; i++) {
      const reply = ask(big, 'crowd', 'A', ctx({ transport: 'tcp' }), { udpSize: 4096, dnssecOk: i % 2 === 0 });
      expect(reply.answers).toHaveLength(200);
      if (i % 2 === 0) firsts.push(String(rdata(reply.answers![0])));
      expect(big.fastPathBytes).toBeLessThanOrEqual(50_000);
    }
    // Every address led a reply, in turn, both times round.
    expect(new Set(firsts).size).toBe(200);
    expect(firsts.slice(0, 200)).toEqual(firsts.slice(200));
    if (fastPath) expect(big.fastPathBytes).toBeGreaterThan(0);
  });

  test('PTR for IPv4 and IPv6 → CONTAINER.NETWORK.ZONE; an unknown address in a tsnet subnet → NXDOMAIN with a SOA', () => {
    expect(datas(ask(r, '2.0.30.172.in-addr.arpa', 'PTR'))).toEqual(['web.front.tsnet']);
    expect(datas(ask(r, '3.0.31.172.in-addr.arpa', 'PTR'))).toEqual(['api.back.tsnet']);
    const v6 = '2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.0.0.d.f.ip6.arpa';
    expect(datas(ask(r, v6, 'PTR'))).toEqual(['web.front.tsnet']);
    const nx = ask(r, '99.0.30.172.in-addr.arpa', 'PTR');
    expect(nx).toMatchObject({ rcode: 'NXDOMAIN', flag_aa: true, answers: [] });
    expect(nx.authorities).toEqual([expect.objectContaining({ type: 'SOA', name: '0.30.172.in-addr.arpa' })]);
    // a /20: the SOA sits at the enclosing octet boundary
    expect(ask(r, '9.15.31.172.in-addr.arpa', 'PTR').authorities![0]).toMatchObject({ name: '31.172.in-addr.arpa' });
  });

  test('SOA and NS at the apex; ns.ZONE answers the address the query arrived on', () => {
    const soa = ask(r, 'tsnet', 'SOA');
    expect(soa.answers).toEqual([
      expect.objectContaining({ type: 'SOA', data: expect.objectContaining({ mname: 'ns.tsnet', rname: 'hostmaster.tsnet', serial: 77, minimum: 5 }) }),
    ]);
    expect(datas(ask(r, 'tsnet', 'NS'))).toEqual(['ns.tsnet']);
    expect(datas(ask(r, 'ns.tsnet', 'A', ctx({ localAddress: '172.30.0.1' })))).toEqual(['172.30.0.1']);
    expect(datas(ask(r, 'ns.tsnet', 'AAAA', ctx({ localAddress: 'fd00:30::1' })))).toEqual(['fd00:30::1']);
    expect(ask(r, 'ns.tsnet', 'AAAA', ctx({ localAddress: '172.30.0.1' }))).toMatchObject({ rcode: 'NOERROR', answers: [] });
  });

  test('NODATA (name without the type) and NXDOMAIN in the zone carry the SOA in the authority section', () => {
    const nodata = ask(r, 'api.back.tsnet', 'AAAA');
    expect(nodata).toMatchObject({ rcode: 'NOERROR', flag_aa: true, answers: [] });
    expect(nodata.authorities).toEqual([expect.objectContaining({ type: 'SOA', name: 'tsnet', ttl: 5 })]);
    expect(ask(r, 'web.front.tsnet', 'MX')).toMatchObject({ rcode: 'NOERROR', answers: [] });
    const nx = ask(r, 'nope.front.tsnet', 'A');
    expect(nx).toMatchObject({ rcode: 'NXDOMAIN', flag_aa: true });
    expect(nx.authorities!.map((x) => x.type)).toEqual(['SOA']);
    // NETWORK.ZONE exists (names below it): NODATA, not NXDOMAIN
    expect(ask(r, 'front.tsnet', 'A')).toMatchObject({ rcode: 'NOERROR', answers: [] });
  });

  test('names on non-tsnet networks and invalid labels are not served; zone transfers are refused', () => {
    expect(ask(r, 'foreign.tsnet', 'A').rcode).toBe('NXDOMAIN');
    expect(ask(r, 'db.bridge.tsnet', 'A').rcode).toBe('NXDOMAIN');
    expect(ask(r, 'bad_alias!', 'A', ctx({ mayForward: false })).rcode).toBe('REFUSED');
    expect(ask(r, 'tsnet', 'AXFR').rcode).toBe('REFUSED');
  });

  test('EDNS: OPT in the reply; UDP replies larger than the client offers are truncated with the OPT kept', () => {
    const p = ask(r, 'web.front.tsnet', 'A', ctx(), { udpSize: 1232 });
    expect(p.additionals!.map((x) => x.type)).toEqual(['OPT']);
    const many = createResolver({ fastPath });
    const big = Array.from({ length: 100 }, (_, i) => ({
      id: `${i}`.padStart(64, 'c'),
      name: `c${i}`,
      hostname: `h${i}`,
      networks: [{ networkId: NET_FRONT, networkName: 'front', ipv4: `172.30.0.${i + 10}`, aliases: ['crowd'] }],
    }));
    many.setZone(buildZone({ zone: ZONE, ttl: 5, networks, containers: big, serial: 1 }));
    const plain = decode(many.handle(query('crowd', 'A'), ctx()));
    expect(plain).toMatchObject({ flag_tc: true, answers: [], additionals: [] });
    const edns = many.handle(query('crowd', 'A', { udpSize: 1232 }), ctx()) as Buffer;
    expect(edns.length).toBeLessThanOrEqual(1232);
    expect(dnsPacket.decode(edns)).toMatchObject({ flag_tc: true, answers: [], additionals: [expect.objectContaining({ type: 'OPT' })] });
    // A larger offer does not lift tsnet's own 1232 (no amplification by spoofed queries); 60 answers fit in it.
    const offer = many.handle(query('crowd', 'A', { udpSize: 4096 }), ctx()) as Buffer;
    expect(offer.length).toBeLessThanOrEqual(1232);
    expect(dnsPacket.decode(offer)).toMatchObject({ flag_tc: true, answers: [] });
    many.setZone(buildZone({ zone: ZONE, ttl: 5, networks, containers: big.slice(0, 60), serial: 2 }));
    const full = dnsPacket.decode(many.handle(query('crowd', 'A', { udpSize: 4096 }), ctx()) as Buffer);
    expect(full.flag_tc).toBe(false);
    expect(full.answers).toHaveLength(60);
    many.setZone(buildZone({ zone: ZONE, ttl: 5, networks, containers: big, serial: 3 }));
    const tcp = dnsPacket.decode(many.handle(query('crowd', 'A'), ctx({ transport: 'tcp' })) as Buffer);
    expect(tcp.answers).toHaveLength(100);
  });

  test('another class than IN is not tsnet\'s, also after the same name was asked in IN (fast-path key)', () => {
    expect(ask(r, 'web.front.tsnet', 'A').rcode).toBe('NOERROR');
    const ch = query('web.front.tsnet', 'A');
    ch.writeUInt16BE(3, ch.length - 2); // QCLASS CH
    expect(decode(r.handle(ch, ctx({ mayForward: false })))).toMatchObject({ rcode: 'REFUSED', answers: [] });
  });

  test('a malformed query gets FORMERR, a response sent as a query nothing', () => {
    const bad = query('web', 'A');
    bad.writeUInt16BE(2, 4);
    expect(decode(r.handle(bad, ctx())).rcode).toBe('FORMERR');
    const resp = query('web', 'A');
    resp[2] |= 0x80;
    expect(r.handle(resp, ctx())).toBeNull();
  });

  test('a new zone replaces the old one at once (no stale fast-path replies)', () => {
    const r2 = resolver({ fastPath });
    expect(datas(ask(r2, 'web.front.tsnet', 'A'))).toEqual(['172.30.0.2']);
    const moved = containers.map((c) =>
      c.name === 'web' ? { ...c, networks: [{ ...c.networks[0], ipv4: '172.30.0.200' }] } : c,
    );
    r2.setZone(buildZone({ zone: ZONE, ttl: 5, networks, containers: moved, serial: 78 }));
    expect(datas(ask(r2, 'web.front.tsnet', 'A'))).toEqual(['172.30.0.200']);
    expect(ask(r2, 'web.back.tsnet', 'A').rcode).toBe('NXDOMAIN');
  });
});

describe('forwarding', () => {
  test('other names are forwarded when the listener allows it; a slow forward does not delay a local answer', async () => {
    const fwd = fakeForwarder();
    const r = resolver({ forwarder: fwd });
    const pending = r.handle(query('example.com', 'A', { id: 31 }), ctx());
    expect(pending).toBeInstanceOf(Promise);
    // the upstream has not answered, yet a local name answers synchronously
    expect(datas(ask(r, 'web.front.tsnet', 'A'))).toEqual(['172.30.0.2']);
    expect(ask(r, 'web.front.tsnet', 'A').flag_ra).toBe(true);
    fwd.release();
    const p = decode(await pending);
    expect(p).toMatchObject({ id: 31, answers: [expect.objectContaining({ data: '93.184.216.34' })] });
    expect(fwd.calls).toEqual(['example.com']);
  });

  test('never forwarded when mayForward is false (internal networks): REFUSED, RA clear', () => {
    const fwd = fakeForwarder();
    const r = resolver({ forwarder: fwd });
    const p = ask(r, 'example.com', 'A', ctx({ mayForward: false }));
    expect(p).toMatchObject({ rcode: 'REFUSED', flag_ra: false });
    expect(ask(r, '8.8.8.8.in-addr.arpa', 'PTR', ctx({ mayForward: false })).rcode).toBe('REFUSED');
    expect(fwd.calls).toEqual([]);
  });

  test('reverse names outside tsnet subnets are forwarded; without a zone everything is', async () => {
    const fwd = fakeForwarder();
    fwd.release();
    const r = resolver({ forwarder: fwd });
    await r.handle(query('8.8.8.8.in-addr.arpa', 'PTR'), ctx());
    const none = createResolver({ forwarder: fwd });
    await none.handle(query('web.front.tsnet', 'A'), ctx());
    expect(fwd.calls).toEqual(['8.8.8.8.in-addr.arpa', 'web.front.tsnet']);
  });
});
