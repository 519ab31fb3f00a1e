/** tsnet's debug log: measured commands and the log lines written while they ran, per plugin call and per step. */
import fs from 'node:fs';
import { sleep } from '../../test/harness/exec';
import { checkAborted } from './abort';
import { groupStats, type Stats, stats } from './stats';

export interface LogLine {
  message?: string;
  level?: string;
  call?: string;
  ms?: number;
  what?: string;
  step?: string;
  cmd?: string;
  [k: string]: unknown;
}

/** One measured command and the byte range of tsnet's log written while it ran (up to the next command). */
export interface Window {
  phase: string;
  label: string;
  wallMs: number;
  from: number;
  to: number;
}

export class TsnetLog {
  private readonly windows: Window[] = [];
  private open: Window | undefined;

  constructor(readonly file: string) {}

  offset(): number {
    try {
      return fs.statSync(this.file).size;
    } catch {
      return 0;
    }
  }

  /** Times `fn` and files the log lines from its start to the next measurement's start under `phase`/`label`. */
  async measure<T>(phase: string, label: string, fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
    checkAborted();
    const from = this.offset();
    this.close(from);
    const t0 = performance.now();
    const value = await fn();
    const ms = performance.now() - t0;
    this.open = { phase, label, wallMs: ms, from, to: from };
    this.windows.push(this.open);
    return { ms, value };
  }

  /** Ends the open window (e.g. at the end of a phase, after tsnet had time to flush its last lines). */
  async settle(): Promise<void> {
    await sleep(100);
    this.close(this.offset());
  }

  private close(at: number): void {
    if (this.open) this.open.to = at;
    this.open = undefined;
  }

  read(from: number, to: number): LogLine[] {
    if (to <= from) return [];
    const fd = fs.openSync(this.file, 'r');
    try {
      const buf = Buffer.alloc(to - from);
      fs.readSync(fd, buf, 0, buf.length, from);
      return parseLines(buf.toString('utf8'));
    } finally {
      fs.closeSync(fd);
    }
  }

  windowsOf(phases: readonly string[]): Window[] {
    return this.windows.filter((w) => phases.includes(w.phase));
  }

  linesOf(w: Window): LogLine[] {
    return this.read(w.from, w.to);
  }
}

export function parseLines(text: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch {
      // a partial or foreign line
    }
  }
  return out;
}

/** One served plugin call with the kernel and store time logged while it ran (calls are sequential in the bench). */
export interface CallInstance {
  call: string;
  ms: number;
  failed: boolean;
  execMs: number;
  storeMs: number;
}

export function callInstances(lines: LogLine[]): CallInstance[] {
  const pending = new Map<string, { execMs: number; storeMs: number }>();
  const out: CallInstance[] = [];
  for (const l of lines) {
    if (!l.call) continue;
    if (l.message === 'plugin call' || l.message === 'plugin call failed') {
      const p = pending.get(l.call) ?? { execMs: 0, storeMs: 0 };
      pending.delete(l.call);
      out.push({ call: l.call, ms: l.ms ?? NaN, failed: l.message !== 'plugin call', ...p });
      continue;
    }
    const p = pending.get(l.call) ?? { execMs: 0, storeMs: 0 };
    if (l.message === 'exec' && typeof l.ms === 'number') p.execMs += l.ms;
    if (l.message === 'store commit' && typeof l.ms === 'number') p.storeMs += l.ms;
    pending.set(l.call, p);
  }
  return out;
}

/** Generated link names (per network/endpoint) and the run's nft table name → their shape, so one command is one row. */
export function anonymize(text: string): string {
  return text.replace(/\b(tsbr-|tsv|tsc)[0-9a-z]{10,12}\b/g, '$1…').replace(/\binet tsnete2e[0-9a-f]{6}\b/g, 'inet <table>');
}

/** `network 0123456789ab` / `endpoint …` → `network` / `endpoint`. */
export function stepOwner(what: unknown): string {
  return typeof what === 'string'
    ? what
        .split(' ')
        .filter((w) => !/^[0-9a-f]{12}$/.test(w))
        .join(' ')
    : '?';
}

/** Per measured tsnet docker command (phase + label): wall time vs the plugin calls dockerd made while it ran. */
export interface CommandShare {
  wall: Stats;
  pluginCalls: Stats;
  rest: Stats;
  calls: string[];
}

export function commandShares(log: TsnetLog, phases: readonly string[]): Record<string, CommandShare> {
  const groups = new Map<string, Array<{ wall: number; plugin: number; calls: string[] }>>();
  for (const w of log.windowsOf(phases)) {
    if (!w.label.startsWith('tsnet ')) continue;
    const inst = callInstances(log.linesOf(w));
    const key = `(${w.phase}) docker ${w.label.slice('tsnet '.length)}`;
    groups.set(key, [...(groups.get(key) ?? []), { wall: w.wallMs, plugin: inst.reduce((s, c) => s + c.ms, 0), calls: inst.map((c) => c.call) }]);
  }
  return Object.fromEntries(
    [...groups.entries()].map(([k, xs]) => [
      k,
      {
        wall: stats(xs.map((x) => x.wall)),
        pluginCalls: stats(xs.map((x) => x.plugin)),
        rest: stats(xs.map((x) => x.wall - x.plugin)),
        calls: xs[0]?.calls.map((c) => c.replace(/^(NetworkDriver|IpamDriver)\./, '')) ?? [],
      },
    ]),
  );
}

export interface Breakdown {
  /** Per plugin call: total ms, summed exec ms, summed store-commit ms, and the rest (express, zod, logic, logging). */
  calls: Record<string, { total: Stats; exec: Stats; store: Stats; other: Stats; failed: number }>;
  steps: Record<string, Stats>;
  exec: Record<string, Stats>;
  storeCommit: Record<string, Stats>;
  firewallChange: Record<string, Stats>;
}

export function breakdown(lines: LogLine[]): Breakdown {
  const inst = callInstances(lines);
  const calls: Breakdown['calls'] = {};
  for (const name of [...new Set(inst.map((i) => i.call))].sort()) {
    const xs = inst.filter((i) => i.call === name && !i.failed);
    calls[name] = {
      total: stats(xs.map((i) => i.ms)),
      exec: stats(xs.map((i) => i.execMs)),
      store: stats(xs.map((i) => i.storeMs)),
      other: stats(xs.map((i) => i.ms - i.execMs - i.storeMs)),
      failed: inst.filter((i) => i.call === name && i.failed).length,
    };
  }
  const callTag = (l: LogLine) => (l.call ? l.call.replace(/^(NetworkDriver|IpamDriver)\./, '') : 'startup');
  return {
    calls,
    steps: groupStats(
      lines.filter((l) => l.message === 'step'),
      (l) => `${stepOwner(l.what)}: ${l.step}`,
      (l) => l.ms,
    ),
    exec: groupStats(
      lines.filter((l) => l.message === 'exec'),
      (l) => `${callTag(l)}: ${anonymize(String(l.cmd))}`,
      (l) => l.ms,
    ),
    storeCommit: groupStats(
      lines.filter((l) => l.message === 'store commit'),
      (l) => callTag(l),
      (l) => l.ms,
    ),
    firewallChange: groupStats(
      lines.filter((l) => l.message === 'firewall change' && typeof l.ms === 'number'),
      (l) => `${callTag(l)}: ${anonymize((typeof l.script === 'string' ? l.script : (l.cmd ?? '')).split('\n')[0])}`,
      (l) => l.ms,
    ),
  };
}
