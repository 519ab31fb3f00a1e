import { runOk } from './exec';
import { delNetns, makeNetns } from './host';

/**
 * A namespace standing in for another machine, wired to the host by a veth: `hostIp` on the host side, `peerIp`
 * inside. Test traffic stays between the host and namespaces the test made.
 */
export interface Peer {
  ns: string;
  hostIf: string;
  hostIp: string;
  peerIp: string;
  /** IPv6 addresses when the peer was made with a /64 prefix. */
  hostIp6?: string;
  peerIp6?: string;
  /** Runs a command inside the namespace. */
  exec(cmd: string, args: string[], timeoutMs?: number): Promise<string>;
}

export interface PeerOptions {
  defaultRoute?: boolean;
  prefix64?: string;
  /** The namespace standing in for the host (default: the real host). */
  hostNs?: string;
  /** Enslave the host end to this bridge (in the host namespace) and put `hostIp` on the bridge instead. */
  hostBridge?: string;
}

export async function makePeer(name: string, hostIf: string, subnet24: string, opts: PeerOptions = {}): Promise<Peer> {
  const hostIp = `${subnet24}.1`;
  const peerIp = `${subnet24}.2`;
  const six = opts.prefix64 ? { hostIp6: `${opts.prefix64}1`, peerIp6: `${opts.prefix64}2` } : {};
  const ns = `${name}-${process.pid}`;
  const onHost = opts.hostNs ? ['-n', opts.hostNs] : [];
  const hostDev = opts.hostBridge ?? hostIf;
  await makeNetns(ns);
  try {
    await runOk('ip', [...onHost, 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    if (opts.hostBridge) {
      await runOk('ip', [...onHost, 'link', 'add', opts.hostBridge, 'type', 'bridge']);
      await runOk('ip', [...onHost, 'link', 'set', hostIf, 'master', opts.hostBridge]);
      await runOk('ip', [...onHost, 'link', 'set', opts.hostBridge, 'up']);
    }
    await runOk('ip', [...onHost, 'addr', 'add', `${hostIp}/24`, 'dev', hostDev]);
    await runOk('ip', [...onHost, 'link', 'set', hostIf, 'up']);
    await runOk('ip', ['-n', ns, 'addr', 'add', `${peerIp}/24`, 'dev', 'eth0']);
    await runOk('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    await runOk('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    if (opts.defaultRoute) await runOk('ip', ['-n', ns, 'route', 'add', 'default', 'via', hostIp]);
    if (six.hostIp6 && six.peerIp6) {
      // nodad: usable at once instead of after duplicate address detection.
      await runOk('ip', [...onHost, 'addr', 'add', `${six.hostIp6}/64`, 'dev', hostDev, 'nodad']);
      await runOk('ip', ['-n', ns, 'addr', 'add', `${six.peerIp6}/64`, 'dev', 'eth0', 'nodad']);
      if (opts.defaultRoute) await runOk('ip', ['-n', ns, '-6', 'route', 'add', 'default', 'via', six.hostIp6]);
    }
  } catch (err) {
    await removePeer({ ns, hostIf, ...(opts.hostNs ? { hostNs: opts.hostNs } : {}) });
    throw err;
  }
  return {
    ns,
    hostIf,
    hostIp,
    peerIp,
    ...six,
    exec: async (cmd, args, timeoutMs = 15_000) => (await runOk('ip', ['netns', 'exec', ns, cmd, ...args], { timeoutMs })).stdout,
  };
}

/** Removes the namespace (which takes its veth end, and so the pair) and the host end if it is still there. */
export async function removePeer(p: { ns: string; hostIf: string; hostNs?: string }): Promise<void> {
  await delNetns(p.ns);
  await runOk('ip', [...(p.hostNs ? ['-n', p.hostNs] : []), 'link', 'del', p.hostIf]).catch(() => undefined);
}
