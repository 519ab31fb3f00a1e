/**
 * A test upstream resolver: dnsmasq in a network namespace of its own, wired to the host by a veth (a LAN machine
 * running a resolver), serving a few "external" names and logging every query it receives, so a test can prove that
 * a query reached it, or that it did NOT.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TEMP_PREFIX } from './dockerd';
import { fileTail, isRunning, onProcessExit, patient, runSync, spawnDaemon, terminate, waitFor } from './exec';
import { makePeer, type Peer, removePeer } from './lan';

export interface UpstreamOptions {
  /** The domain it serves: unknown names in it are NXDOMAIN; names outside it are REFUSED. */
  domain: string;
  /** `--host-record` names (in {@link UpstreamOptions.domain}) and their IPv4 address. */
  records: Record<string, string>;
  /** First three octets of the veth's /24 (`.1` on the host, `.2` in the namespace), e.g. `10.53.7`. */
  subnet24: string;
}

/** One query as dnsmasq logged it. */
export interface LoggedQuery {
  type: string;
  name: string;
  from: string;
}

export interface TestUpstream {
  /** The namespace standing in for a LAN machine; `peer.exec` runs a command there. */
  readonly peer: Peer;
  /** Where dnsmasq listens (UDP and TCP port 53), the `--dns-upstream` to give tsnet. */
  readonly address: string;
  /** The host's own address on the veth, on a link the test made: usable as a `--dns-listen` host address. */
  readonly hostAddress: string;
  /** Every query received so far, in order. */
  queries(): LoggedQuery[];
  /** Resolves once a query for `name` (any type) is in the log; rejects after `timeoutMs`. */
  waitForQuery(name: string, timeoutMs?: number): Promise<void>;
  /** SIGSTOP/SIGCONT dnsmasq: a dead upstream that swallows queries (UDP and TCP) until resumed. */
  pause(): void;
  resume(): void;
  /** Stops dnsmasq and deletes the namespace and the veth. Idempotent. */
  destroy(): Promise<void>;
}

const QUERY_LINE = /query\[(\w+)\] (\S+) from (\S+)/;

/**
 * Starts the upstream and waits until it answers. The namespace and dnsmasq also go at process exit if the test
 * never calls `destroy()`.
 */
export async function startUpstream(opts: UpstreamOptions): Promise<TestUpstream> {
  const tag = randomBytes(3).toString('hex');
  const dir = fs.mkdtempSync(`${TEMP_PREFIX}upstream-`);
  const logFile = path.join(dir, 'dnsmasq.log');
  const peer = await makePeer(`tsdnsup${tag}`, `dnsup${tag}`, opts.subnet24);
  const unregister = onProcessExit(() => {
    runSync('ip', ['netns', 'del', peer.ns]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const args = [
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--no-resolv',
    '--no-hosts',
    '--no-poll',
    '--bind-interfaces',
    `--listen-address=${peer.peerIp}`,
    '--port=53',
    '--user=root',
    `--pid-file=${path.join(dir, 'dnsmasq.pid')}`,
    '--log-queries',
    `--log-facility=${logFile}`,
    // Keep the log to what tsnet sends: no cache means every forwarded query shows, even a repeated one.
    '--cache-size=0',
    `--local=/${opts.domain}/`,
    ...Object.entries(opts.records).map(([name, ip]) => `--host-record=${name},${ip}`),
  ];
  let child: ChildProcess | undefined;
  const signal = (sig: NodeJS.Signals): void => {
    if (!child?.kill(sig)) throw new Error(`dnsmasq is not running (${sig})`);
  };
  const destroy = async (): Promise<void> => {
    // A stopped process takes SIGTERM only once it runs again.
    child?.kill('SIGCONT');
    if (child) await terminate(child, 2_000);
    child = undefined;
    await removePeer(peer);
    fs.rmSync(dir, { recursive: true, force: true });
    unregister();
  };
  try {
    // `ip netns exec` and setpriv exec in place: the child is dnsmasq itself, so signals reach it.
    child = spawnDaemon('ip', ['netns', 'exec', peer.ns, 'dnsmasq', ...args], { logFile: path.join(dir, 'stderr.log') });
    const started = child;
    const timeoutMs = patient(10_000);
    await waitFor(
      () => {
        if (!isRunning(started)) throw new Error(`dnsmasq exited (code ${started.exitCode}) during start\n${fileTail(path.join(dir, 'stderr.log'))}`);
        return fs.existsSync(logFile) && fs.readFileSync(logFile, 'utf8').includes('started, version');
      },
      timeoutMs,
      () => `dnsmasq not ready after ${timeoutMs} ms\n${fileTail(logFile)}`,
      50,
    );
  } catch (e) {
    await destroy();
    throw e;
  }
  const queries = (): LoggedQuery[] => {
    const text = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '';
    return text.split('\n').flatMap((line) => {
      const m = QUERY_LINE.exec(line);
      return m ? [{ type: m[1], name: m[2].toLowerCase(), from: m[3] }] : [];
    });
  };
  return {
    peer,
    address: peer.peerIp,
    hostAddress: peer.hostIp,
    queries,
    waitForQuery: (name, timeoutMs = patient(5_000)) =>
      waitFor(
        () => queries().some((q) => q.name === name.toLowerCase()),
        timeoutMs,
        () =>
          `upstream saw no query for ${name} in ${timeoutMs} ms; it saw: ${queries()
            .map((q) => `${q.type} ${q.name}`)
            .join(', ')}`,
        50,
      ),
    pause: () => signal('SIGSTOP'),
    resume: () => signal('SIGCONT'),
    destroy,
  };
}
