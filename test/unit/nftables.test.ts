import type { ExecResult } from '../../src/kernel/exec';
import type { LinkInfo } from '../../src/kernel/contract';
import { NftFirewall } from '../../src/kernel/nftables';

const TABLE = 'tsnet_unit';
const ENOENT = 'Error: Could not process rule: No such file or directory\n';

/**
 * A stand-in for nft (unit tests never run the real one): it knows only whether the table exists. Element lines
 * fail with nft's ENOENT while it is missing; a script that adds the table creates it. iptables has no DOCKER-USER.
 */
function stubNft() {
  const state = { table: false, scripts: [] as string[] };
  const exec = (file: string, args: string[], input?: string): Promise<ExecResult> => {
    const ok = { code: 0, stdout: '', stderr: '' };
    if (file !== 'nft') return Promise.resolve({ code: 1, stdout: '', stderr: 'iptables: No chain/target/match by that name.\n' });
    if (args[0] === 'list') return Promise.resolve(state.table ? ok : { code: 1, stdout: '', stderr: ENOENT });
    const script = input ?? '';
    state.scripts.push(script);
    if (script.startsWith(`delete table inet ${TABLE}`)) {
      const had = state.table;
      state.table = false;
      return Promise.resolve(had ? ok : { code: 1, stdout: '', stderr: ENOENT });
    }
    if (script.startsWith(`add table inet ${TABLE}`)) state.table = true;
    else if (!state.table) return Promise.resolve({ code: 1, stdout: '', stderr: ENOENT });
    return Promise.resolve(ok);
  };
  return { state, exec };
}

const NET = { bridge: 'tsbr-unit000001', internal: false, icc: true, masquerade: true };
const NET2 = { bridge: 'tsbr-unit000002', internal: false, icc: false, masquerade: true };
const PORT = { proto: 'tcp' as const, hostPort: 8080, containerIp: '172.30.0.2', containerPort: 80 };

describe('NftFirewall: a table deleted behind tsnet\'s back (nft delete table, flush ruleset)', () => {
  test('the next add rebuilds the whole table (base, every known element, the new ones) in one transaction, once', async () => {
    const nft = stubNft();
    const fw = new NftFirewall(0x2000000, TABLE, { exec: nft.exec });
    await fw.addNetwork(NET);
    expect(nft.state.table).toBe(true);
    nft.state.table = false; // behind tsnet's back
    nft.state.scripts.length = 0;
    await fw.addNetwork(NET2);
    await fw.addPorts([PORT]);
    expect(nft.state.table).toBe(true);
    // The failed element add, then one rebuild carrying both networks; the port goes as a plain element add.
    expect(nft.state.scripts).toHaveLength(3);
    const [, rebuild, port] = nft.state.scripts;
    expect(rebuild).toMatch(new RegExp(`^add table inet ${TABLE}\n`));
    expect(rebuild).toContain(`add element inet ${TABLE} bridges { "${NET.bridge}" }`);
    expect(rebuild).toContain(`add element inet ${TABLE} noicc { "${NET2.bridge}" }`);
    expect(port).toBe(`add element inet ${TABLE} dnat4any { tcp . 8080 : 172.30.0.2 . 80 }\n`);
  });

  test('a publish after the loss brings back the networks and earlier ports with it', async () => {
    const nft = stubNft();
    const fw = new NftFirewall(0x2000000, TABLE, { exec: nft.exec });
    await fw.addNetwork(NET);
    await fw.addPorts([PORT]);
    nft.state.table = false;
    await fw.addPorts([{ ...PORT, hostPort: 8081 }]);
    const rebuild = nft.state.scripts[nft.state.scripts.length - 1];
    expect(rebuild).toContain(`add element inet ${TABLE} bridges { "${NET.bridge}" }`);
    expect(rebuild).toContain('tcp . 8080 : 172.30.0.2 . 80');
    expect(rebuild).toContain('tcp . 8081 : 172.30.0.2 . 80');
  });

  test('deleting elements of a missing table succeeds (nothing to delete) and restores what remains', async () => {
    const nft = stubNft();
    const fw = new NftFirewall(0x2000000, TABLE, { exec: nft.exec });
    await fw.addNetwork(NET);
    await fw.addNetwork(NET2);
    nft.state.table = false;
    await fw.removeNetwork(NET2);
    expect(nft.state.table).toBe(true);
    const rebuild = nft.state.scripts[nft.state.scripts.length - 1];
    expect(rebuild).toContain(`add element inet ${TABLE} bridges { "${NET.bridge}" }`);
    expect(rebuild).not.toContain(NET2.bridge);
  });

  test('other nft errors are not retried and leave memory as it was', async () => {
    const nft = stubNft();
    const fw = new NftFirewall(0x2000000, TABLE, {
      exec: (file, args, input) => (input?.includes('8082') ? Promise.resolve({ code: 1, stdout: '', stderr: 'Error: Could not process rule: File exists\n' }) : nft.exec(file, args, input)),
    });
    await fw.addNetwork(NET);
    await expect(fw.addPorts([{ ...PORT, hostPort: 8082 }])).rejects.toThrow(/File exists/);
    nft.state.table = false;
    await fw.addPorts([PORT]);
    expect(nft.state.scripts[nft.state.scripts.length - 1]).not.toContain('8082');
  });
});

describe('NftFirewall: Docker bridges and the forward guard', () => {
  const link = (name: string, kind = 'bridge'): LinkInfo => ({ name, kind, mtu: 1500, mac: '02:00:00:00:00:01', up: true, addresses: [] });

  test('only docker0 and br-<12 hex> bridges fill dockerbr; br-lan and look-alikes do not', async () => {
    const nft = stubNft();
    const links = [link('docker0'), link('br-0123456789ab'), link('br-lan'), link('br-ex'), link('br-0123456789abc'), link('br-0123456789AB'), link('br-aaaaaaaaaaaa', 'veth'), link('eth0', '')];
    const fw = new NftFirewall(0x2000000, TABLE, { exec: nft.exec, links: () => Promise.resolve(links) });
    await fw.addNetwork(NET);
    const first = nft.state.scripts[0];
    expect(first).toContain(`add element inet ${TABLE} dockerbr { "br-0123456789ab", "docker0" }`);
    expect(first).not.toMatch(/br-lan|br-ex|br-0123456789abc|br-0123456789AB|br-aaaaaaaaaaaa/);
  });

  test('a refresh replaces the set in one transaction, and only when the bridges changed', async () => {
    const nft = stubNft();
    const links = [link('docker0')];
    const fw = new NftFirewall(0x2000000, TABLE, { exec: nft.exec, links: () => Promise.resolve(links) });
    await fw.addNetwork(NET);
    const n = nft.state.scripts.length;
    await fw.refreshDockerBridges();
    expect(nft.state.scripts).toHaveLength(n);
    links.push(link('br-fedcba987654'));
    await fw.refreshDockerBridges();
    expect(nft.state.scripts.slice(n)).toEqual([`flush set inet ${TABLE} dockerbr\nadd element inet ${TABLE} dockerbr { "br-fedcba987654", "docker0" }\n`]);
  });

  test('the forward guard survives a rebuild', async () => {
    const nft = stubNft();
    const fw = new NftFirewall(0x2000000, TABLE, { exec: nft.exec });
    await fw.setForwardGuard('ipv4');
    expect(nft.state.scripts[0]).toContain(`add element inet ${TABLE} fwdguard { ipv4 }`);
    nft.state.table = false;
    await fw.addNetwork(NET);
    expect(nft.state.scripts[nft.state.scripts.length - 1]).toContain(`add element inet ${TABLE} fwdguard { ipv4 }`);
  });

  test('after a restart (its table still in the kernel) the guard goes in alone: no rebuild empties the sets before the sync', async () => {
    const nft = stubNft();
    nft.state.table = true;
    const fw = new NftFirewall(0x2000000, TABLE, { exec: nft.exec });
    await fw.setForwardGuard('ipv4');
    expect(nft.state.scripts).toEqual([`add element inet ${TABLE} fwdguard { ipv4 }\n`]);
    await fw.sync({ networks: [NET], ports: [], noIccPorts: [], host: { dockerBridges: [], forwardGuard: ['ipv4'] } });
    const sync = nft.state.scripts[nft.state.scripts.length - 1];
    expect(sync).toContain(`add element inet ${TABLE} fwdguard { ipv4 }`);
    expect(sync).toContain(`add element inet ${TABLE} bridges { "${NET.bridge}" }`);
  });
});
