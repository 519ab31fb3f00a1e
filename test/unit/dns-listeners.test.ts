import type { DnsNetwork, ListenerSpec } from '../../src/dns/contract';
import { DnsListeners, desiredListeners, type ListenPlan } from '../../src/dns/listeners';

const plan: ListenPlan = { port: 53, onGateways: true, onInternal: false, hostAddresses: [] };
const net = (id: string, over: Partial<DnsNetwork> = {}): DnsNetwork => ({ id, internal: false, subnets: ['10.7.0.0/24'], hostAddresses: ['10.7.0.1'], ...over });

describe('desiredListeners', () => {
  test('one listener per gateway address of each network, forwarding allowed', () => {
    const specs = desiredListeners(plan, [net('n1', { hostAddresses: ['10.7.0.1', 'fd00:7::1'] }), net('n2', { hostAddresses: ['10.8.0.1'] })]);
    expect(specs).toEqual([
      { address: '10.7.0.1', port: 53, networkId: 'n1', noForward: false },
      { address: 'fd00:7::1', port: 53, networkId: 'n1', noForward: false },
      { address: '10.8.0.1', port: 53, networkId: 'n2', noForward: false },
    ]);
  });

  test('an internal network gets no listener unless asked, and then one that never forwards', () => {
    const nets = [net('int', { internal: true })];
    expect(desiredListeners(plan, nets)).toEqual([]);
    expect(desiredListeners({ ...plan, onInternal: true }, nets)).toEqual([{ address: '10.7.0.1', port: 53, networkId: 'int', noForward: true }]);
  });

  test('host addresses are added; the same address as a gateway stays the network listener', () => {
    const specs = desiredListeners({ ...plan, onInternal: true, hostAddresses: ['10.7.0.1', '10.99.0.5'] }, [net('int', { internal: true })]);
    expect(specs).toEqual([
      { address: '10.7.0.1', port: 53, networkId: 'int', noForward: true },
      { address: '10.99.0.5', port: 53, noForward: false },
    ]);
  });

  test('without gateways only the host addresses', () => {
    expect(desiredListeners({ ...plan, onGateways: false, hostAddresses: ['10.99.0.5'], port: 5353 }, [net('n1')])).toEqual([{ address: '10.99.0.5', port: 5353, noForward: false }]);
  });
});

/** An opener recording what is open; addresses in `unbindable` fail like EADDRNOTAVAIL. */
function fakeOpener() {
  const open = new Map<string, ListenerSpec>();
  const unbindable = new Set<string>();
  let opens = 0;
  const opener = (spec: ListenerSpec) => {
    opens++;
    if (unbindable.has(spec.address)) return Promise.reject(new Error(`bind EADDRNOTAVAIL ${spec.address}:${spec.port}`));
    const k = `${spec.address}|${spec.port}`;
    if (open.has(k)) return Promise.reject(new Error(`bind EADDRINUSE ${k}`));
    open.set(k, spec);
    return Promise.resolve({
      close: () => {
        open.delete(k);
        return Promise.resolve();
      },
    });
  };
  return { open, unbindable, opener, opens: () => opens };
}

const spec = (address: string, over: Partial<ListenerSpec> = {}): ListenerSpec => ({ address, port: 53, noForward: false, ...over });

describe('DnsListeners', () => {
  afterEach(() => jest.useRealTimers());

  test('follows the wanted set: opens new, closes dropped, keeps unchanged ones open', async () => {
    const f = fakeOpener();
    const l = new DnsListeners(f.opener);
    await l.update([spec('10.7.0.1'), spec('10.8.0.1')]);
    expect([...f.open.keys()].sort()).toEqual(['10.7.0.1|53', '10.8.0.1|53']);
    await l.update([spec('10.8.0.1'), spec('10.9.0.1')]);
    expect([...f.open.keys()].sort()).toEqual(['10.8.0.1|53', '10.9.0.1|53']);
    expect(f.opens()).toBe(3);
    await l.close();
    expect(f.open.size).toBe(0);
  });

  test('a listener whose network or forwarding changed is reopened with the new spec', async () => {
    const f = fakeOpener();
    const l = new DnsListeners(f.opener);
    await l.update([spec('10.7.0.1', { networkId: 'old' })]);
    await l.update([spec('10.7.0.1', { networkId: 'new', noForward: true })]);
    expect(f.open.get('10.7.0.1|53')).toEqual(spec('10.7.0.1', { networkId: 'new', noForward: true }));
    expect(l.listening()).toEqual([spec('10.7.0.1', { networkId: 'new', noForward: true })]);
    await l.close();
  });

  test('a failed bind does not fail the update and is retried until it binds', async () => {
    jest.useFakeTimers();
    const f = fakeOpener();
    f.unbindable.add('10.7.0.1');
    const l = new DnsListeners(f.opener, 1000);
    await l.update([spec('10.7.0.1'), spec('10.8.0.1')]);
    expect([...f.open.keys()]).toEqual(['10.8.0.1|53']);
    await jest.advanceTimersByTimeAsync(1000);
    expect([...f.open.keys()]).toEqual(['10.8.0.1|53']);
    f.unbindable.delete('10.7.0.1');
    await jest.advanceTimersByTimeAsync(1000);
    expect([...f.open.keys()].sort()).toEqual(['10.7.0.1|53', '10.8.0.1|53']);
    const opens = f.opens();
    await jest.advanceTimersByTimeAsync(5000);
    expect(f.opens()).toBe(opens);
    await l.close();
  });

  test('no retry for a listener no longer wanted, none after close', async () => {
    jest.useFakeTimers();
    const f = fakeOpener();
    f.unbindable.add('10.7.0.1');
    const l = new DnsListeners(f.opener, 1000);
    await l.update([spec('10.7.0.1')]);
    await l.update([]);
    const opens = f.opens();
    await jest.advanceTimersByTimeAsync(3000);
    expect(f.opens()).toBe(opens);
    await l.update([spec('10.7.0.1')]);
    await l.close();
    await jest.advanceTimersByTimeAsync(3000);
    expect(f.opens()).toBe(opens + 1);
  });

  test('an update after close (a network change while tsnet stops) opens nothing', async () => {
    const f = fakeOpener();
    const l = new DnsListeners(f.opener);
    await l.update([spec('10.7.0.1')]);
    const closing = l.close();
    const late = l.update([spec('10.7.0.1'), spec('10.8.0.1')]);
    await Promise.all([closing, late]);
    await l.update([spec('10.9.0.1')]);
    expect(f.open.size).toBe(0);
    expect(l.listening()).toEqual([]);
    expect(l.isOwn('10.9.0.1', 53)).toBe(false);
  });

  test('isOwn matches wanted listeners across address spellings, whether bound or not', async () => {
    const f = fakeOpener();
    f.unbindable.add('fd00:7::1');
    const l = new DnsListeners(f.opener);
    await l.update([spec('10.7.0.1'), spec('fd00:7::1')]);
    expect(l.isOwn('::ffff:10.7.0.1', 53)).toBe(true);
    expect(l.isOwn('FD00:7:0::1', 53)).toBe(true);
    expect(l.isOwn('10.7.0.1', 5353)).toBe(false);
    expect(l.isOwn('10.7.0.2', 53)).toBe(false);
    // A link-local nameserver with its zone (RDNSS on the host's resolv.conf) is compared, not a throw.
    expect(l.isOwn('fe80::1%eth0', 53)).toBe(false);
    await l.update([spec('fe80::1%eth0')]);
    expect(l.isOwn('FE80:0::1%eth0', 53)).toBe(true);
    expect(l.isOwn('fe80::1%eth1', 53)).toBe(false);
    await l.close();
  });
});
