import { spawn } from 'node:child_process';
import { MonitorWatch, type MonitorProcess } from './monitor';

export interface FirewallWatchOptions {
  spawnMonitor?: () => MonitorProcess;
  /** Events within this window cause one check (a firewalld reload is a burst of deletions and additions). */
  debounceMs?: number;
  /** Wait before restarting a monitor that died: while it is down, each restart is also a check. */
  restartMs?: number;
  /** A check this often whatever the monitor says (iptables-legacy's DOCKER-USER is invisible to `nft monitor`). */
  everyMs?: number;
}

/**
 * Whether one `nft monitor` line may mean tsnet's firewall lost something: a table, chain, set, map or rule of
 * tsnet's tables (`inet <table>`, `bridge <table>`) going (`nft flush ruleset` lists each object it deletes), or any
 * change to a DOCKER-USER chain (deleted with its rule, or created anew by a restarted dockerd, without it), or a rule
 * deleted from FORWARD (where tsnet keeps the twin of its DOCKER-USER rule).
 * Element changes do not count: tsnet makes them on every plugin call.
 */
export function firewallEventMatters(line: string, table: string): boolean {
  const [verb, kind, family, name, chain] = line.split(' ');
  if (['table', 'chain', 'rule'].includes(kind) && (family === 'ip' || family === 'ip6')) {
    // tsnet's twin rule lives in FORWARD too; dockerd deletes a FORWARD rule (its jump) at every network create.
    if (kind === 'rule' && chain === 'FORWARD' && name === 'filter') return verb === 'delete';
    if (kind === 'table' ? name === 'filter' : chain === 'DOCKER-USER') return verb !== 'add' || kind === 'chain';
  }
  return (verb === 'delete' || verb === 'flush') && ['table', 'chain', 'rule', 'set', 'map'].includes(kind) && (family === 'inet' || family === 'bridge') && name === table;
}

/**
 * Notices tsnet's firewall being removed behind its back (`nft flush ruleset`, a firewalld reload, someone deleting
 * its table or its DOCKER-USER rule) and calls `check`, which restores what is missing. A long-lived `nft monitor`
 * reports the deletions as they happen; when it dies, it is restarted and each restart checks; a slow periodic
 * check covers what the monitor cannot see.
 */
export class FirewallWatcher extends MonitorWatch {
  constructor(table: string, check: () => Promise<void>, opts: FirewallWatchOptions = {}) {
    super(check, {
      spawnMonitor: opts.spawnMonitor ?? (() => spawn('nft', ['monitor'], { stdio: ['ignore', 'pipe', 'ignore'] })),
      relevant: (l) => firewallEventMatters(l, table),
      label: 'firewall monitor',
      debounceMs: opts.debounceMs ?? 20,
      restartMs: opts.restartMs ?? 500,
      everyMs: opts.everyMs ?? 30_000,
    });
  }
}
