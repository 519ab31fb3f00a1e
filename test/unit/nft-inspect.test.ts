import fs from 'node:fs';
import path from 'node:path';
import type { FwWant } from '../../src/kernel/contract';
import type { ExecResult } from '../../src/kernel/exec';
import { diffElements, noElements, wantedElements } from '../../src/kernel/firewall-render';
import { inspection, parseNftTable } from '../../src/kernel/nft-json';
import { NftFirewall } from '../../src/kernel/nftables';
import { TsnetError } from '../../src/errors';

/**
 * `nft -j list table inet h2cap` / `bridge h2cap` as nft 1.0.6 printed them for renderFull(0x2000000, WANT) applied
 * in a scratch namespace (test/unit/nft-captured/).
 */
const CAPTURED = path.join(__dirname, 'nft-captured');
const inetJson = fs.readFileSync(path.join(CAPTURED, 'inet.json'), 'utf8');
const bridgeJson = fs.readFileSync(path.join(CAPTURED, 'bridge.json'), 'utf8');
const TABLE = 'h2cap';

const WANT: FwWant = {
  networks: [
    { bridge: 'tsbr-aaaaaaaaaa', internal: false, icc: false, masquerade: true },
    { bridge: 'tsbr-bbbbbbbbbb', internal: true, icc: true, masquerade: true },
  ],
  ports: [
    { proto: 'tcp', hostPort: 8080, containerIp: '172.28.5.2', containerPort: 80 },
    { proto: 'udp', hostIp: '127.0.0.1', hostPort: 53, containerIp: '172.28.5.3', containerPort: 5353 },
    { proto: 'tcp', hostPort: 8443, containerIp: 'fd00:1::2', containerPort: 443 },
    { proto: 'sctp', hostIp: 'fd00::1', hostPort: 9, containerIp: 'fd00:1::3', containerPort: 9 },
  ],
  noIccPorts: ['tsvaaaa', 'tsvbbbb'],
  host: { dockerBridges: ['docker0', 'br-0123456789ab'], forwardGuard: ['ipv4', 'ipv6'] },
};

/** The captured inet listing with `edit` applied to its list of objects. */
function inetEdited(edit: (items: Array<Record<string, unknown>>) => Array<Record<string, unknown>>): string {
  const doc = JSON.parse(inetJson) as { nftables: Array<Record<string, unknown>> };
  return JSON.stringify({ nftables: edit(doc.nftables) });
}

describe('inspecting tsnet\'s tables from nft -j', () => {
  test('an intact table reads back exactly the elements its state renders: the diff is empty', () => {
    const got = inspection({ inet: parseNftTable(inetJson), bridge: parseNftTable(bridgeJson) }, false);
    expect(got.table).toBe('intact');
    const want = wantedElements(WANT);
    for (const set of Object.keys(want) as Array<keyof typeof want>) expect([...got.elements[set]].sort()).toEqual([...want[set]].sort());
    const diff = diffElements(want, got.elements);
    expect(diff).toEqual({ add: noElements(), remove: noElements() });
  });

  test('a rule deleted behind tsnet\'s back makes the table damaged, naming the chain', () => {
    let dropped = false;
    const json = inetEdited((items) =>
      items.filter((o) => {
        const rule = o.rule as { chain?: string } | undefined;
        if (dropped || rule?.chain !== 'forward') return true;
        dropped = true;
        return false;
      }),
    );
    const got = inspection({ inet: parseNftTable(json), bridge: parseNftTable(bridgeJson) }, false);
    expect(got).toMatchObject({ table: 'damaged', why: 'chain inet forward has 9 rules, not 10' });
  });

  test('a missing map, a missing chain or one of the two tables: damaged; neither table: absent', () => {
    const noMap = inetEdited((items) => items.filter((o) => (o.map as { name?: string } | undefined)?.name !== 'dnat6'));
    expect(inspection({ inet: parseNftTable(noMap), bridge: parseNftTable(bridgeJson) }, false)).toMatchObject({ table: 'damaged', why: 'map inet dnat6 is missing' });
    const noChain = inetEdited((items) => items.filter((o) => (o.chain as { name?: string } | undefined)?.name !== 'localnet' && (o.rule as { chain?: string } | undefined)?.chain !== 'localnet'));
    expect(inspection({ inet: parseNftTable(noChain), bridge: parseNftTable(bridgeJson) }, false)).toMatchObject({ table: 'damaged', why: 'chain inet localnet is missing' });
    expect(inspection({ inet: parseNftTable(inetJson), bridge: undefined }, false)).toMatchObject({ table: 'damaged', why: 'table bridge is missing' });
    expect(inspection({ inet: undefined, bridge: undefined }, true)).toMatchObject({ table: 'absent', hookMissing: true });
  });

  test('an element changed behind tsnet\'s back: the old one goes, the recorded one comes back', () => {
    const json = inetEdited((items) =>
      items.map((o) => {
        const map = o.map as { name?: string } | undefined;
        return map?.name === 'dnat4any' ? { map: { ...map, elem: [[{ concat: ['tcp', 8080] }, { concat: ['172.28.5.99', 80] }]] } } : o;
      }),
    );
    const got = inspection({ inet: parseNftTable(json), bridge: parseNftTable(bridgeJson) }, false);
    const { add, remove } = diffElements(wantedElements(WANT), got.elements);
    expect(add.dnat4any).toEqual(['tcp . 8080 : 172.28.5.2 . 80']);
    expect(remove.dnat4any).toEqual(['tcp . 8080 : 172.28.5.99 . 80']);
  });

  test('an object tsnet does not know is refused, not guessed at', () => {
    const json = inetEdited((items) => [...items, { flowtable: { name: 'f' } }]);
    expect(() => parseNftTable(json)).toThrow(TsnetError);
  });
});

describe('NftFirewall.inspect and sync with a patch', () => {
  const ok = (stdout = ''): ExecResult => ({ code: 0, stdout, stderr: '' });
  const hookLine = '-A DOCKER-USER -m mark --mark 0x2000000/0x2000000 -m comment --comment h2cap -j ACCEPT';

  function stub(dockerUser: string | undefined) {
    const runs: Array<{ file: string; args: string[]; input?: string }> = [];
    const exec = (file: string, args: string[], input?: string): Promise<ExecResult> => {
      runs.push({ file, args, input });
      if (file === 'nft' && args[0] === '-j') return Promise.resolve(ok(args[3] === 'inet' ? inetJson : bridgeJson));
      if (file === 'nft') return Promise.resolve(ok());
      if (args.includes('-S')) return Promise.resolve(dockerUser === undefined ? { code: 1, stdout: '', stderr: 'No chain' } : ok(`-N DOCKER-USER\n${dockerUser}\n-A DOCKER-USER -j RETURN\n`));
      return Promise.resolve(ok());
    };
    return { runs, fw: new NftFirewall(0x2000000, TABLE, { exec }) };
  }

  test.each([
    ['the rule is there (iptables prints the mark unpadded)', hookLine, false],
    ['DOCKER-USER exists without it', '', true],
    ['no DOCKER-USER at all (dockerd --iptables=false)', undefined, false],
  ])('hook: %s', async (_what, dockerUser, missing) => {
    const { fw } = stub(dockerUser);
    expect((await fw.inspect()).hookMissing).toBe(missing);
  });

  test('an empty patch runs nothing; a patch is one transaction, deletes first, map elements deleted by key', async () => {
    const { runs, fw } = stub(hookLine);
    await fw.sync(WANT, { add: noElements(), remove: noElements(), hook: false });
    expect(runs).toEqual([]);
    const add = { ...noElements(), dnat4any: ['tcp . 8080 : 172.28.5.2 . 80'] };
    const remove = { ...noElements(), dnat4any: ['tcp . 8080 : 172.28.5.99 . 80'], noiccports: ['"tsvzzzz"'] };
    await fw.sync(WANT, { add, remove, hook: false });
    expect(runs).toHaveLength(1);
    expect(runs[0].input).toBe(
      [`delete element inet ${TABLE} dnat4any { tcp . 8080 }`, `delete element bridge ${TABLE} noiccports { "tsvzzzz" }`, `add element inet ${TABLE} dnat4any { tcp . 8080 : 172.28.5.2 . 80 }`].join('\n') + '\n',
    );
  });

  test('after a patch the firewall knows its table: a later lost table is rebuilt with the synced state', async () => {
    const { runs, fw } = stub(hookLine);
    await fw.sync(WANT, { add: noElements(), remove: noElements(), hook: false });
    await fw.addNoIccPorts(['tsvcccc']);
    // A plain element add, not a rebuild: the base is known to be in place.
    expect(runs.map((r) => r.input)).toEqual([`add element bridge ${TABLE} noiccports { "tsvcccc" }\n`]);
  });
});
