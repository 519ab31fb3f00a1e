import { dynamicRange, hostRange, parseDefaultPools, parsePool, pickDefaultPool, reservedRole, routeObstacles } from '../../src/ipam/pools';
import { addressAt, contains, offsetOf, overlaps, parseCidr, parseIp } from '../../src/netaddr';

const cidr = (text: string) => parseCidr('test', text);

describe('parseCidr', () => {
  test.each([
    ['172.28.1.0/16', '172.28.0.0/16', false],
    ['10.0.0.7/32', '10.0.0.7/32', false],
    ['0.0.0.0/0', '0.0.0.0/0', false],
    ['FD00:0:0:0::1/64', 'fd00::/64', true],
    ['2001:db8:0:0:1:0:0:1/128', '2001:db8::1:0:0:1/128', true],
    ['::ffff:10.1.2.3/104', '10.0.0.0/8', false],
    ['::ffff:10.1.2.3/128', '10.1.2.3/32', false],
  ])('%s canonicalises to %s', (text, canonical, v6) => {
    const c = cidr(text);
    expect(c.text).toBe(canonical);
    expect(c.v6).toBe(v6);
  });

  const malformed = ['10.0.0.0/33', '10.0.0.0', '10.0.0/8', '010.0.0.0/8', '10.0.0.0/08', '10.0.0.0/', '/8',
    'fd00::/129', 'fe80::1%eth0/64', 'fd00::/-1', '10.0.0.0/8/8', 'x', '', ' 10.0.0.0/8'];
  test.each(malformed)('%j is rejected naming the field', (text) => {
    expect(() => parseCidr('Pool', text)).toThrow(
      expect.objectContaining({ code: 'TSN_INVALID_ADDRESS', message: `Pool "${text}": not a valid CIDR` }),
    );
  });

  test('the error code can be chosen by the caller', () => {
    expect(() => parseCidr('base', 'nope', 'TSN_INVALID_OPTION')).toThrow(
      expect.objectContaining({ code: 'TSN_INVALID_OPTION' }),
    );
  });
});

describe('parseIp', () => {
  test('canonical forms; IPv4-mapped IPv6 is IPv4', () => {
    expect(parseIp('Address', 'FD00:0::5')).toEqual({ v6: true, value: (0xfd00n << 112n) + 5n, text: 'fd00::5' });
    expect(parseIp('Address', '::ffff:172.28.0.5')).toEqual({ v6: false, value: 0xac1c0005n, text: '172.28.0.5' });
  });

  const malformed = ['1.2.3', '1.2.3.4/32', '01.2.3.4', '0x1.2.3.4', '1.2.3.256', 'fe80::1%eth0', ''];
  test.each(malformed)('%j is rejected', (t) => {
    expect(() => parseIp('Address', t)).toThrow(
      expect.objectContaining({ code: 'TSN_INVALID_ADDRESS', message: `Address "${t}": not a valid IP address` }),
    );
  });
});

describe('parsePool', () => {
  test('IPv6 pools overlapping the IPv4-mapped range are refused', () => {
    expect(() => parsePool('Pool', '::/64')).toThrow(expect.objectContaining({ code: 'TSN_INVALID_ADDRESS' }));
    expect(() => parsePool('Pool', '::ffff:0:0/95')).toThrow(/IPv4-mapped/);
    expect(parsePool('Pool', 'fd00::/64').text).toBe('fd00::/64');
  });
});

describe('overlap and containment', () => {
  test('overlaps', () => {
    expect(overlaps(cidr('10.0.0.0/8'), cidr('10.200.0.0/16'))).toBe(true);
    expect(overlaps(cidr('10.0.0.0/16'), cidr('10.1.0.0/16'))).toBe(false);
    expect(overlaps(cidr('10.0.0.0/24'), cidr('10.0.0.255/32'))).toBe(true);
    // the same integer in different families never overlaps
    expect(overlaps(cidr('0.0.0.0/8'), cidr('::/120'))).toBe(false);
  });

  test('contains', () => {
    expect(contains(cidr('172.28.0.0/16'), cidr('172.28.5.0/24'))).toBe(true);
    expect(contains(cidr('172.28.5.0/24'), cidr('172.28.0.0/16'))).toBe(false);
    expect(contains(cidr('172.28.0.0/16'), cidr('10.1.0.0/24'))).toBe(false);
    expect(contains(cidr('fd00::/48'), cidr('fd00:0:0:7::/64'))).toBe(true);
  });
});

describe('offsets', () => {
  test('IPv4 and IPv6 round trips', () => {
    const v4 = cidr('172.28.0.0/16');
    expect(offsetOf(v4, parseIp('a', '172.28.5.2'))).toBe(0x0502n);
    expect(addressAt(v4, 0x0502n)).toBe('172.28.5.2');
    expect(offsetOf(v4, parseIp('a', '172.29.0.0'))).toBeUndefined();
    expect(offsetOf(v4, parseIp('a', 'fd00::1'))).toBeUndefined();
    const v6 = cidr('fd00:1::/48');
    const far = (1n << 80n) - 1n;
    expect(addressAt(v6, far)).toBe('fd00:1:0:ffff:ffff:ffff:ffff:ffff');
    expect(offsetOf(v6, parseIp('a', 'fd00:1:0:ffff:ffff:ffff:ffff:ffff'))).toBe(far);
  });

  test.each([
    ['10.0.0.0/30', 1n, 2n],
    ['10.0.0.0/31', 0n, 1n],
    ['10.0.0.7/32', 0n, 0n],
    ['fd00::/64', 1n, (1n << 64n) - 1n],
    ['fd00::/127', 0n, 1n],
    ['fd00::1/128', 0n, 0n],
  ])('host range of %s is %s..%s', (text, lo, hi) => {
    expect(hostRange(cidr(text))).toEqual({ lo, hi });
  });

  test('reserved roles', () => {
    expect(reservedRole(cidr('10.0.0.0/24'), 0n)).toBe('the network address');
    expect(reservedRole(cidr('10.0.0.0/24'), 255n)).toBe('the broadcast address');
    expect(reservedRole(cidr('10.0.0.0/24'), 254n)).toBeUndefined();
    expect(reservedRole(cidr('fd00::/64'), 0n)).toBe('the subnet-router anycast address');
    expect(reservedRole(cidr('10.0.0.0/31'), 0n)).toBeUndefined();
  });

  test('dynamic range is the host range narrowed to the ip-range', () => {
    const pool = cidr('172.28.0.0/16');
    expect(dynamicRange(pool, cidr('172.28.5.0/24'))).toEqual({ lo: 0x500n, hi: 0x5ffn });
    expect(dynamicRange(pool, pool)).toEqual({ lo: 1n, hi: 0xfffen });
    expect(dynamicRange(pool, undefined)).toEqual({ lo: 1n, hi: 0xfffen });
  });
});

describe('default pools', () => {
  const v4 = parseDefaultPools(
    [
      { base: '172.17.0.0/16', size: 16 },
      { base: '192.168.0.0/16', size: 20 },
    ],
    false,
  );

  test('first candidate when nothing is taken', () => {
    expect(pickDefaultPool(v4, [])?.text).toBe('172.17.0.0/16');
  });

  test('skips taken pools and routes, jumping to the next aligned block', () => {
    const taken = [cidr('172.17.0.0/16'), cidr('192.168.0.0/24'), cidr('192.168.17.0/24')];
    expect(pickDefaultPool(v4, taken)?.text).toBe('192.168.32.0/20');
  });

  test('a covering obstacle exhausts the spec', () => {
    expect(pickDefaultPool(v4, [cidr('172.16.0.0/12'), cidr('192.168.0.0/16')])).toBeUndefined();
  });

  test('a /48 cut into /64s with the first 60000 blocks blocked answers in few steps', () => {
    const v6 = parseDefaultPools([{ base: 'fd74:736e:6574::/48', size: 64 }], true);
    const obstacles = [cidr('fd74:736e:6574::/49'), cidr('fd74:736e:6574:8000::/50'), cidr('fd74:736e:6574:c000::/64')];
    const start = performance.now();
    expect(pickDefaultPool(v6, obstacles)?.text).toBe('fd74:736e:6574:c001::/64');
    expect(performance.now() - start).toBeLessThan(50);
  });

  test.each([
    [{ base: '10.0.0.0/16', size: 8 }, /size 8/],
    [{ base: '10.0.0.0/16', size: 33 }, /size 33/],
    [{ base: 'nope', size: 24 }, /"nope": not a valid CIDR/],
    [{ base: 'fd00::/48', size: 64 }, /not an IPv4 prefix/],
  ])('bad spec %j is TSN_INVALID_OPTION', (spec, message) => {
    expect(() => parseDefaultPools([spec], false)).toThrow(
      expect.objectContaining({ code: 'TSN_INVALID_OPTION', message: expect.stringMatching(message) }),
    );
  });

  test('routeObstacles drops default routes, other families and junk', () => {
    const routes = ['0.0.0.0/0', '10.0.0.0/8', 'fd00::/64', 'garbage', '172.17.0.1/16', '192.0.2.9'];
    const got = routeObstacles(routes, false);
    expect(got.map((c) => c.text)).toEqual(['10.0.0.0/8', '172.17.0.0/16', '192.0.2.9/32']);
    expect(routeObstacles(['::/0', 'fd00::/64'], true).map((c) => c.text)).toEqual(['fd00::/64']);
  });
});
