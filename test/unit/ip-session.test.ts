import { IpBatchSession } from '../../src/kernel/ip-session';
import { runOk } from '../harness/exec';
import { delNetns, makeNetns } from '../harness/host';

/** The long-lived `ip -batch` against the real kernel, inside a namespace of the test's own. */
const canRun = process.getuid?.() === 0;
const d = canRun ? describe : describe.skip;
if (!canRun) console.log('ip-session tests skipped: they need root to create a network namespace');

d('IpBatchSession', () => {
  const ns = `tsnet-ipb-${process.pid}`;
  let session: IpBatchSession;

  beforeAll(async () => {
    await makeNetns(ns);
    session = new IpBatchSession(['ip', '-n', ns]);
  });
  afterAll(async () => {
    session.close();
    await delNetns(ns);
  });

  const linkNames = async (): Promise<string[]> => {
    const links = JSON.parse((await runOk('ip', ['-n', ns, '-json', 'link', 'show'])).stdout) as Array<{ ifname: string }>;
    return links.map((l) => l.ifname).sort();
  };

  test('batches run whole, one after another', async () => {
    expect(await session.run(['link add name br0 type bridge', 'link set dev br0 up'])).toBeUndefined();
    expect(await session.run(['link add name v0 type veth peer name v1', 'link set dev v0 master br0'])).toBeUndefined();
    expect(await linkNames()).toEqual(['br0', 'lo', 'v0', 'v1']);
  });

  test('the first failing line is named and the lines after it do not run; the next batch works', async () => {
    const failure = await session.run(['link add name v2 type veth peer name v3', 'link add name br0 type bridge', 'link add name br9 type bridge']);
    // jest types asymmetric matchers as any.
    expect(failure).toEqual({ index: 1, reason: expect.stringMatching(/File exists/) as unknown });
    expect(await linkNames()).toEqual(['br0', 'lo', 'v0', 'v1', 'v2', 'v3']);
    expect(await session.run(['link del dev v2', 'link del dev br0'])).toBeUndefined();
    expect(await linkNames()).toEqual(['lo', 'v0', 'v1']);
  });

  test('concurrent batches are serialised', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => session.run([`link add name c${i} type bridge`])));
    expect(results.every((r) => r === undefined)).toBe(true);
    expect((await linkNames()).filter((n) => n.startsWith('c'))).toHaveLength(20);
  });
});
