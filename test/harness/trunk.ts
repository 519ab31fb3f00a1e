/**
 * Two hosts on one 802.1Q trunk: a veth pair whose end A stays in the host (root) namespace — the NIC tsnet's
 * macvlan/ipvlan networks get as `parent` (`<a>` or `<a>.100`) — and whose end B sits in a namespace standing in
 * for host B, which has its own VLAN subinterfaces and addresses (or macvlan children, as its containers would).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isRunning, onProcessExit, patient, run, runOk, runSync, spawnDaemon, terminate, waitFor } from './exec';
import { delNetns, makeNetns } from './host';

export interface Trunk {
  /** End A, in the host namespace, up, no address. */
  readonly a: string;
  /** Host B's namespace. */
  readonly ns: string;
  /** End B, in {@link ns}, up. */
  readonly b: string;
  /** Runs a command in host B; its stdout. */
  exec(cmd: string, args: string[], timeoutMs?: number): Promise<string>;
  /** `<b>.<id>` in host B, up, with `cidr` (e.g. `10.100.0.2/24`) on it; returns its name. */
  vlan(id: number, cidr: string): Promise<string>;
  /** A macvlan child (bridge mode) of `dev` in host B with `cidr`, as a container there would have; its name. */
  macvlan(dev: string, cidr: string): Promise<string>;
  /** One ping from host B. */
  ping(ip: string): Promise<boolean>;
  /** Starts tcpdump on end B for frames matching `filter` (tcpdump syntax); resolves once it listens. */
  sniff(filter: string): Promise<Sniffer>;
  /** Deletes host B's namespace (which takes end B, so the pair, and everything in it) and end A. Never throws. */
  destroy(): Promise<void>;
}

/** A running capture; its lines are `tcpdump -e -nn` output: link headers, 802.1Q tags included. */
export interface Sniffer {
  /** The frames captured so far. */
  frames(): string[];
  /** Ends the capture (tcpdump flushes what it has on SIGTERM); every frame captured. */
  stop(): Promise<string[]>;
}

/** A frame line starts with tcpdump's timestamp; its notices (listening, counts) do not. */
const FRAME = /^\d\d:\d\d:\d\d\.\d+ /;

async function sniff(ns: string, dev: string, filter: string): Promise<Sniffer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-sniff-'));
  const logFile = path.join(dir, 'tcpdump.log');
  const child = spawnDaemon('ip', ['netns', 'exec', ns, 'tcpdump', '-e', '-nn', '-l', '--immediate-mode', '-i', dev, filter], { logFile });
  const lines = (): string[] => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').split('\n') : []);
  const stop = async (): Promise<string[]> => {
    await terminate(child, patient(5_000));
    const frames = lines().filter((l) => FRAME.test(l));
    fs.rmSync(dir, { recursive: true, force: true });
    return frames;
  };
  try {
    await waitFor(
      () => {
        if (!isRunning(child)) throw new Error(`tcpdump on ${dev} in ${ns} exited: ${lines().join('\n')}`);
        return lines().some((l) => l.startsWith('listening on'));
      },
      patient(10_000),
      () => `tcpdump on ${dev} in ${ns} not listening: ${lines().join('\n')}`,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { frames: () => lines().filter((l) => FRAME.test(l)), stop };
}

/** Namespaces and links made by this process, deleted at exit even when a test crashed before its cleanup. */
const live = new Map<string, string>();
onProcessExit(() => {
  for (const [ns, a] of live) {
    runSync('ip', ['netns', 'del', ns]);
    runSync('ip', ['link', 'del', a]);
  }
});

let seq = 0;

/**
 * A trunk for the calling `describe`: made in beforeAll (then `setUp` adds host B's addresses), destroyed in
 * afterAll. Returns its getter.
 */
export function useTrunk(setUp: (t: Trunk) => Promise<void>): () => Trunk {
  let trunk: Trunk | undefined;
  beforeAll(async () => {
    trunk = await makeTrunk();
    await setUp(trunk);
  }, patient(60_000));
  afterAll(async () => {
    await trunk?.destroy();
  });
  return () => {
    if (!trunk) throw new Error('useTrunk: the trunk is not made (beforeAll failed or has not run)');
    return trunk;
  };
}

/**
 * A fresh trunk with names unique to this run: ends `tk<6 hex>a` / `…b` (VLAN children `…a.100` stay within 15
 * characters), host B's namespace `tkb<6 hex>-<pid>`. Host B answers ARP only for addresses on the interface the
 * request came in on (arp_ignore=1), as a host whose VLANs are separate would, so reaching one of its addresses
 * over the wrong VLAN fails instead of being answered through another interface.
 */
export async function makeTrunk(): Promise<Trunk> {
  const tag = randomBytes(3).toString('hex');
  const a = `tk${tag}a`;
  const b = `tk${tag}b`;
  const ns = `tkb${tag}-${process.pid}`;
  const exec = async (cmd: string, args: string[], timeoutMs = patient(15_000)): Promise<string> =>
    (await runOk('ip', ['netns', 'exec', ns, cmd, ...args], { timeoutMs })).stdout;
  const destroy = async (): Promise<void> => {
    await delNetns(ns).catch(() => undefined);
    await run('ip', ['link', 'del', a]).catch(() => undefined);
    live.delete(ns);
  };
  live.set(ns, a);
  try {
    await makeNetns(ns);
    await runOk('ip', ['link', 'add', a, 'type', 'veth', 'peer', 'name', b, 'netns', ns]);
    await runOk('ip', ['link', 'set', a, 'up']);
    await runOk('ip', ['-n', ns, 'link', 'set', b, 'up']);
    await runOk('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await exec('sysctl', ['-q', '-w', 'net.ipv4.conf.all.arp_ignore=1']);
  } catch (err) {
    await destroy();
    throw err;
  }
  return {
    a,
    ns,
    b,
    exec,
    destroy,
    vlan: async (id, cidr) => {
      const dev = `${b}.${id}`;
      await runOk('ip', ['-n', ns, 'link', 'add', 'link', b, 'name', dev, 'type', 'vlan', 'id', String(id)]);
      await runOk('ip', ['-n', ns, 'addr', 'add', cidr, 'dev', dev]);
      await runOk('ip', ['-n', ns, 'link', 'set', dev, 'up']);
      return dev;
    },
    macvlan: async (dev, cidr) => {
      const child = `tkm${tag}${seq++}`;
      await runOk('ip', ['-n', ns, 'link', 'add', 'link', dev, 'name', child, 'type', 'macvlan', 'mode', 'bridge']);
      await runOk('ip', ['-n', ns, 'addr', 'add', cidr, 'dev', child]);
      await runOk('ip', ['-n', ns, 'link', 'set', child, 'up']);
      return child;
    },
    // busybox's ping: the host may have no ping of its own.
    ping: async (ip) =>
      (await run('ip', ['netns', 'exec', ns, '/bin/busybox', 'ping', '-c', '1', '-W', '2', ip], { timeoutMs: patient(15_000) })).code === 0,
    sniff: (filter) => sniff(ns, b, filter),
  };
}
