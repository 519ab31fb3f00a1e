import { dnsNetworks } from '../../src/dns/networks';
import { childReq, setupOn } from './child-fixtures';
import { setup, netReq, NID, NID2 } from './driver-fixtures';

/** Records as the driver makes them from CreateNetwork, so the DNS view follows what the driver really stores. */
describe('dnsNetworks', () => {
  test('a bridge network listens on the gateways it put on its bridge; internal and subnets carried', async () => {
    const { driver } = await setup();
    await driver.createNetwork(
      netReq({
        enableIPv6: true,
        internal: true,
        ipv6: [{ addressSpace: 'tsnet-local', pool: 'fd00:28::/64', gateway: 'fd00:28::1/64', auxAddresses: {} }],
      }),
    );
    expect(dnsNetworks(driver.state().networks)).toEqual([{ id: NID, internal: true, subnets: ['172.28.0.0/16', 'fd00:28::/64'], hostAddresses: ['172.28.5.254', 'fd00:28::1'] }]);
  });

  test('inhibit_ipv4 keeps the IPv4 gateway off the bridge, so no listener there', async () => {
    const { driver } = await setup();
    await driver.createNetwork(netReq({ driverOptions: { 'com.docker.network.bridge.inhibit_ipv4': 'true' } }));
    expect(dnsNetworks(driver.state().networks)[0]?.hostAddresses).toEqual([]);
  });

  test('a macvlan network has no host address to listen on', async () => {
    const { driver } = await setupOn(childReq('macvlan', 'eth1', { networkId: NID2 }));
    expect(dnsNetworks(driver.state().networks)).toEqual([{ id: NID2, internal: false, subnets: ['192.168.10.0/24'], hostAddresses: [] }]);
  });
});
