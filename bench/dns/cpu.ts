/** Where a server's time goes: its CPU from /proc/PID/stat, and a `node --cpu-prof` profile summarised to the top functions. */
import fs from 'node:fs';
import { z } from 'zod';

/** USER_HZ: the unit of /proc/PID/stat's times; 100 on every Linux this runs on (`getconf CLK_TCK`). */
const CLK_TCK = 100;

/** utime and stime of a process and all its threads, in seconds. */
export function cpuTimes(pid: number): { user: number; sys: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // comm (field 2) may hold spaces and parentheses: the fields after it start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15, i.e. 11 and 12 after state (field 3).
  return { user: Number(fields[11]) / CLK_TCK, sys: Number(fields[12]) / CLK_TCK };
}

export function cpuSeconds(pid: number): number {
  const t = cpuTimes(pid);
  return t.user + t.sys;
}

/**
 * Seconds the process's main thread (for node: the event loop) spent runnable but waiting for a CPU
 * (/proc/PID/schedstat, second field, ns): on a shared machine the part of a latency that is nobody's code.
 */
export function runqueueSeconds(pid: number): number {
  return Number(fs.readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e9;
}

export interface CpuShare {
  /** Percent of one core the process used (user + system). */
  cpuPct: number;
  /** The part of it in the kernel (system time), percent of one core. */
  sysPct: number;
  /** Percent of the time its main thread was runnable but waiting for a CPU. */
  waitPct: number;
}

/** What a process used of the CPU while `fn` ran (NaN for every figure without a pid). */
export async function withCpu<T>(pid: number | undefined, fn: () => Promise<T>): Promise<{ value: T } & CpuShare> {
  if (pid === undefined) return { value: await fn(), cpuPct: NaN, sysPct: NaN, waitPct: NaN };
  const c0 = cpuTimes(pid);
  const w0 = runqueueSeconds(pid);
  const t0 = performance.now();
  const value = await fn();
  const wallS = (performance.now() - t0) / 1000;
  const c1 = cpuTimes(pid);
  const pct = (x: number) => Math.round((x / wallS) * 1000) / 10;
  return { value, cpuPct: pct(c1.user + c1.sys - c0.user - c0.sys), sysPct: pct(c1.sys - c0.sys), waitPct: pct(runqueueSeconds(pid) - w0) };
}

/** The parts of V8's `.cpuprofile` JSON the summary reads. */
const ProfileSchema = z.object({
  nodes: z.array(
    z.object({
      id: z.number(),
      callFrame: z.object({ functionName: z.string(), url: z.string(), lineNumber: z.number() }),
      hitCount: z.number().optional(),
    }),
  ),
});
export type CpuProfile = z.infer<typeof ProfileSchema>;
type ProfileNode = CpuProfile['nodes'][number];

export interface ProfileRow {
  fn: string;
  selfPct: number;
}

export function readProfile(file: string): CpuProfile {
  return ProfileSchema.parse(JSON.parse(fs.readFileSync(file, 'utf8')));
}

/** `fn file:line` with the path cut to what follows node_modules/ or dist/, so rows read the same on every checkout. */
function frameName(f: ProfileNode['callFrame']): string {
  const url = f.url.replace(/^file:\/\//, '').replace(/^.*\/(node_modules|dist)\//, '$1/');
  const where = url === '' ? '' : ` ${url}:${f.lineNumber + 1}`;
  return `${f.functionName || '(anonymous)'}${where}`;
}

/**
 * Self time per function as a percent of the busy samples, the `top` rows. The profile spans tsnet's whole life
 * (start-up and the idle seconds around the load too), so V8's `(idle)` is left out of the total and given apart;
 * the garbage collector and `(program)` (native code outside JS) stay rows of their own.
 */
export function topFunctions(p: CpuProfile, top: number): { samples: number; idlePct: number; rows: ProfileRow[] } {
  const hits = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const n of p.nodes) {
    const h = n.hitCount ?? 0;
    total += h;
    const k = frameName(n.callFrame);
    if (k === '(idle)') idle += h;
    else hits.set(k, (hits.get(k) ?? 0) + h);
  }
  const busy = total - idle || 1;
  const rows = [...hits.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([fn, h]) => ({ fn, selfPct: Math.round((1000 * h) / busy) / 10 }));
  return { samples: total, idlePct: Math.round((1000 * idle) / (total || 1)) / 10, rows };
}
