import fs from 'node:fs';
import path from 'node:path';
import { eventually, runOk } from '../harness/exec';
import { describeE2E } from '../harness/host';
import { HostNs } from '../harness/hostns';
import type { PluginResponse } from '../harness/tsnet';

/**
 * Graceful shutdown of the real process (tsnet in its own host namespace, the test playing dockerd on the socket):
 * a call in flight at SIGTERM completes, a call after it gets the Err, the socket and the state lock go, exit is
 * clean. The call is held in flight by stopping tsnet's `ip -batch` child (SIGSTOP) while it makes a bridge.
 */
jest.setTimeout(90_000);

let h: HostNs | undefined;
afterEach(async () => {
  await h?.destroy();
  h = undefined;
});

/** tsnet's long-lived `ip -batch` child (made by the first kernel change). */
async function ipBatchPid(tsnetPid: number): Promise<number> {
  const { stdout } = await runOk('ps', ['-o', 'pid=,args=', '--ppid', String(tsnetPid)]);
  const line = stdout.split('\n').find((l) => /\bip .*-batch/.test(l));
  if (!line) throw new Error(`no ip -batch child of ${tsnetPid}:\n${stdout}`);
  return Number(line.trim().split(/\s+/)[0]);
}

/** Whether tsnet's log has a line of the handler serving network `id` (kernel reads log with the call's ids). */
function serving(dir: string, id: string): boolean {
  return fs.readFileSync(path.join(dir, 'tsnet.log'), 'utf8').includes(`"networkId":"${id}"`);
}

const createNetwork = (id: string, subnet24: string) => ({
  NetworkID: id,
  Options: { 'com.docker.network.generic': {} },
  IPv4Data: [{ AddressSpace: 'tsnet-local', Pool: `${subnet24}.0/24`, Gateway: `${subnet24}.1/24` }],
  IPv6Data: [],
});

describeE2E('graceful shutdown (SIGTERM)', () => {
  test('a call in flight completes, later calls (Plugin.Activate too) get "tsnet is shutting down", then the socket and lock go and tsnet exits', async () => {
    h = await HostNs.create();
    const first = await h.network('10.89.10');
    const pid = h.tsnet.pid!;
    const ip = await ipBatchPid(pid);
    process.kill(ip, 'SIGSTOP');
    let inFlight: Promise<PluginResponse> | undefined;
    try {
      const id = 'f'.repeat(64);
      inFlight = h.tsnet.call('NetworkDriver.CreateNetwork', createNetwork(id, '10.89.11'));
      await eventually(() => expect(serving(h!.dir, id)).toBe(true), 10_000, 20);
      process.kill(pid, 'SIGTERM');
      await eventually(() => expect(fs.readFileSync(path.join(h!.dir, 'tsnet.log'), 'utf8')).toContain('"tsnet stopping"'), 5_000, 20);
      for (const method of ['Plugin.Activate', 'NetworkDriver.DeleteNetwork']) {
        const res = await h.tsnet.call(method, { NetworkID: first.id });
        expect(res).toMatchObject({ status: 503, body: { Err: 'tsnet is shutting down' } });
      }
    } finally {
      process.kill(ip, 'SIGCONT');
    }
    expect(await inFlight).toMatchObject({ status: 200, body: {} });
    await eventually(() => expect(() => process.kill(pid, 0)).toThrow(), 15_000, 50);
    const log = fs.readFileSync(path.join(h.dir, 'tsnet.log'), 'utf8');
    expect(log).toContain('"clean":true');
    expect(log).not.toContain('cut off by shutdown');
    expect(fs.existsSync(h.tsnet.socket)).toBe(false);
    expect(fs.existsSync(path.join(h.dir, 'state', 'tsnet.lock'))).toBe(false);
    // The network made by the call that finished is kept: the next start knows it (and its bridge is there).
    await h.tsnet.start();
    expect((await h.tsnet.call('NetworkDriver.CreateNetwork', createNetwork('f'.repeat(64), '10.89.11'))).status).not.toBe(500);
    expect(await h.exec('ip', ['-o', 'link', 'show'])).toContain(`tsbr-${'f'.repeat(10)}`);
  });

  test('a second signal exits at once, without waiting for the call in flight', async () => {
    h = await HostNs.create();
    await h.network('10.89.12');
    const pid = h.tsnet.pid!;
    const ip = await ipBatchPid(pid);
    process.kill(ip, 'SIGSTOP');
    try {
      const held = h.tsnet.call('NetworkDriver.CreateNetwork', createNetwork('e'.repeat(64), '10.89.13')).catch((err: unknown) => err);
      await eventually(() => expect(serving(h!.dir, 'e'.repeat(64))).toBe(true), 10_000, 20);
      process.kill(pid, 'SIGTERM');
      await eventually(() => expect(fs.readFileSync(path.join(h!.dir, 'tsnet.log'), 'utf8')).toContain('"tsnet stopping"'), 5_000, 20);
      process.kill(pid, 'SIGINT');
      await eventually(() => expect(() => process.kill(pid, 0)).toThrow(), 5_000, 20);
      expect(fs.readFileSync(path.join(h.dir, 'tsnet.log'), 'utf8')).toContain('second signal: exiting now');
      // The connection dies with the process: no reply at all, as after a kill -9.
      expect(String(await held)).toMatch(/socket hang up|ECONNRESET/);
    } finally {
      process.kill(ip, 'SIGCONT');
    }
  });
});
