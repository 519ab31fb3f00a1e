import { eventually, run } from '../harness/exec';
import { describeE2E } from '../harness/host';
import { HostNs } from '../harness/hostns';

/**
 * Firewall drift while tsnet runs (tsnet in its own host namespace, the test playing dockerd on the socket): the
 * ruleset flushed, a firewalld-style reload, tsnet's table deleted, its DOCKER-USER rule deleted. tsnet notices by
 * itself (nft monitor) and restores its table exactly, elements and forward guard included, and the published port
 * answers again. The window (from the flush to the table being back, polled every 5 ms) is printed, not asserted.
 */
jest.setTimeout(180_000);

const TRIES = 20;

let h: HostNs | undefined;
afterEach(async () => {
  await h?.destroy();
  h = undefined;
});

/** `nft list table` in the host namespace, counters zeroed; undefined when the table is gone. */
async function table(family: string, name: string): Promise<string | undefined> {
  const r = await run('ip', ['netns', 'exec', h!.ns, 'nft', 'list', 'table', family, name]);
  return r.code === 0 ? r.stdout.replace(/counter packets \d+ bytes \d+/g, 'counter packets 0 bytes 0') : undefined;
}

async function hooked(): Promise<boolean> {
  const rules = await run('ip', ['netns', 'exec', h!.ns, 'iptables', '-w', '-S', 'DOCKER-USER']);
  return rules.code === 0 && rules.stdout.includes(`--comment ${h!.tsnet.name}`);
}

/**
 * Runs `script` (sh) in the host namespace `tries` times; after each, polls every 5 ms until tsnet's DNAT map
 * holds `port` again. The milliseconds from the end of the script to that, per try (measured inside the namespace,
 * so process start-up of `ip netns exec` does not count).
 */
async function windows(script: string, port: number, tries: number): Promise<number[]> {
  const T = h!.tsnet.name;
  const js = `
const { execFileSync, spawnSync } = require('child_process');
const out = [];
for (let i = 0; i < ${tries}; i++) {
  execFileSync('sh', ['-c', ${JSON.stringify(script)}]);
  const t0 = performance.now();
  for (;;) {
    const r = spawnSync('nft', ['list', 'map', 'inet', '${T}', 'dnat4any']);
    if (r.status === 0 && r.stdout.includes(' ${port} :')) break;
    if (performance.now() - t0 > 10000) { out.push(-1); break; }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
  }
  if (out.length === i) out.push(performance.now() - t0);
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
}
process.stdout.write(JSON.stringify(out));`;
  const r = await run('ip', ['netns', 'exec', h!.ns, process.execPath, '-e', js], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`window probe failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as number[];
}

function summary(ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b);
  return `p50 ${s[Math.floor(s.length / 2)].toFixed(0)} ms, max ${s[s.length - 1].toFixed(0)} ms over ${s.length}`;
}

describeE2E('firewall drift: tsnet restores its table and DOCKER-USER rule by itself', () => {
  test('flush ruleset, firewalld-style reload, table deleted, DOCKER-USER rule deleted: all come back; the port answers', async () => {
    // Forwarding off, so tsnet turns it on and guards it: its forward guard is part of what must come back.
    h = await HostNs.create({ 'net/ipv4/ip_forward': '0' });
    const T = h.tsnet.name;
    const lan = await h.lan('lana', 'lan0', '10.89.20', { defaultRoute: true });
    const net = await h.network('10.89.21');
    const c = await h.container(net, 2);
    await h.serve(c.ns, 80, 'published');
    await h.publish(c, 80, 8085);
    // dockerd's chain, as a dockerd --iptables=true makes it: tsnet hooks it as soon as it appears.
    await h.exec('iptables', ['-w', '-N', 'DOCKER-USER']);
    await eventually(async () => expect(await hooked()).toBe(true), 5_000, 20);
    expect(await h.tcp(lan.ns, lan.hostIp, 8085)).toBe('published');
    const inet = await table('inet', T);
    const bridge = await table('bridge', T);
    expect(inet).toContain('8085');
    expect(inet).toMatch(/set fwdguard \{[^}]*elements = \{ ipv4 \}/);

    const restored = async (what: string) => {
      await eventually(async () => {
        expect(await table('inet', T)).toEqual(inet);
        expect(await table('bridge', T)).toEqual(bridge);
      }, 5_000, 20);
      expect(await h!.tcp(lan.ns, lan.hostIp, 8085)).toBe('published');
      return what;
    };

    const flush = await windows('nft flush ruleset', 8085, TRIES);
    console.log(`firewall drift window, nft flush ruleset: ${summary(flush)} (${flush.map((m) => m.toFixed(0)).join(' ')})`);
    expect(flush.every((m) => m >= 0)).toBe(true);
    await restored('flush ruleset');
    // The flush took DOCKER-USER (iptables-nft) with it; a restarted dockerd makes it again, and tsnet hooks it.
    await h.exec('iptables', ['-w', '-N', 'DOCKER-USER']);
    await eventually(async () => expect(await hooked()).toBe(true), 5_000, 20);

    // firewalld's reload: one transaction that flushes everything and loads its own tables.
    const firewalld = 'printf "flush ruleset\\nadd table inet firewalld\\nadd chain inet firewalld filter_INPUT { type filter hook input priority 10; policy accept; }\\n" | nft -f -';
    const reload = await windows(firewalld, 8085, 5);
    console.log(`firewall drift window, firewalld-style reload: ${summary(reload)}`);
    await restored('firewalld reload');
    expect(await table('inet', 'firewalld')).toContain('filter_INPUT');

    const del = await windows(`nft delete table inet ${T}`, 8085, 5);
    console.log(`firewall drift window, delete table inet ${T}: ${summary(del)}`);
    await restored('table deleted');

    // Only tsnet's DOCKER-USER rule goes: the table is intact, the rule comes back.
    await h.exec('iptables', ['-w', '-N', 'DOCKER-USER']).catch(() => undefined);
    await eventually(async () => expect(await hooked()).toBe(true), 5_000, 20);
    const mark = `0x${h.tsnet.fwMark.toString(16).padStart(8, '0')}`;
    await h.exec('iptables', ['-w', '-D', 'DOCKER-USER', '-m', 'mark', '--mark', `${mark}/${mark}`, '-m', 'comment', '--comment', T, '-j', 'ACCEPT']);
    await eventually(async () => expect(await hooked()).toBe(true), 5_000, 20);
    await restored('DOCKER-USER rule deleted');

    // An element deleted one by one is below the cheap check; SIGHUP syncs the whole table from the records.
    await h.exec('nft', ['delete', 'element', 'inet', T, 'dnat4any', '{ tcp . 8085 }']);
    expect(await h.tcp(lan.ns, lan.hostIp, 8085)).not.toBe('published');
    process.kill(h.tsnet.pid!, 'SIGHUP');
    await restored('SIGHUP');
    expect(await h.tsnet.call('Plugin.Activate', {})).toMatchObject({ status: 200 });
  });
});
