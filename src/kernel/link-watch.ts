import { spawn } from 'node:child_process';
import { MonitorWatch, type MonitorProcess } from './monitor';
import { isDockerBridgeName } from './names';

export type { MonitorProcess } from './monitor';

export interface LinkWatchOptions {
  spawnMonitor?: () => MonitorProcess;
  /** Events within this window cause one re-read. */
  debounceMs?: number;
  /** Wait before restarting a monitor that died. */
  restartMs?: number;
}

/**
 * The interface name of one `ip -o monitor link` line ("[Deleted ]<index>: <name>[@<peer>]: <flags> ..."), or
 * undefined for lines of another shape.
 */
export function monitorLinkName(line: string): string | undefined {
  return /^(?:Deleted )?\d+: ([^:@\s]+)(?:@\S*)?: /.exec(line)?.[1];
}

/**
 * Keeps Docker's bridges current while tsnet runs: a long-lived `ip -o monitor link`, restarted if it dies. Only
 * events naming a Docker-style bridge (docker0, br-<12 hex>) count, so tsnet's own veth churn costs nothing; they
 * are debounced into one `onChange` at a time. A restart also calls `onChange`, as events may have been missed.
 */
export class LinkWatcher extends MonitorWatch {
  constructor(onChange: () => Promise<void>, opts: LinkWatchOptions = {}) {
    super(onChange, {
      spawnMonitor: opts.spawnMonitor ?? (() => spawn('ip', ['-o', 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] })),
      relevant: (l) => isDockerBridgeName(monitorLinkName(l) ?? ''),
      label: 'link monitor',
      debounceMs: opts.debounceMs ?? 200,
      restartMs: opts.restartMs ?? 1000,
    });
  }
}
