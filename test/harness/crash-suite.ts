/**
 * The crash-point sweep as a jest suite body, shared by test/e2e/crash-points.test.ts (bridge, macvlan) and
 * test/e2e/crash-points-vlan.test.ts (macvlan on an 802.1Q parent tsnet makes; the VM run).
 *
 * Per scenario: one traced run learns the N steps (kernel changes, firewall changes, store commits) after tsnet's
 * start; then for each chosen k tsnet runs with TSNET_FAULT_EXIT_AFTER at start + k, the scenario goes on until a
 * docker command fails or tsnet died, tsnet is restarted without the switch (`--reclaim-grace 1`) and
 * {@link CrashSweep.recover} checks what the crash left and that dockerd can complete the scenario.
 *
 * Which k: TSNET_CRASH_SWEEP=full (`make crash-sweep`) takes every k of every scenario. Otherwise (CI; a crash point
 * costs ~20 s: two tsnet starts, the reclaim grace, dockerd's part) only the scenarios given a CI sample run, at the
 * last step of each plugin call named there: the point where the work is done and committed and dockerd has no
 * answer yet. The others are skipped, naming make crash-sweep.
 */
import fs from 'node:fs';
import { vethPair } from './containers';
import { CrashSweep, type CrashOutcome, type Scenario, stepKind, stepName } from './crash';
import { run, runOk } from './exec';
import type { E2EEnv } from './tsnet';

export const FULL_SWEEP = process.env.TSNET_CRASH_SWEEP === 'full';

/**
 * TSNET_CRASH_POINTS=`scenario:k,k;scenario:k` re-runs just those crash points (of a full sweep's report), and no
 * other scenario.
 */
export function chosenPoints(spec: string | undefined): Map<string, number[]> | undefined {
  if (spec === undefined || spec === '') return undefined;
  const points = new Map<string, number[]>();
  for (const part of spec.split(';')) {
    const m = /^([\w-]+):(\d+(?:,\d+)*)$/.exec(part.trim());
    if (!m) throw new Error(`TSNET_CRASH_POINTS: "${part}" is not scenario:k[,k...]`);
    points.set(m[1], m[2].split(',').map(Number));
  }
  return points;
}
const POINTS = chosenPoints(process.env.TSNET_CRASH_POINTS);

/** TSNET_CRASH_LOG=FILE: each crash point's outcome is appended as it is known (jest prints only at the end). */
function progress(line: string): void {
  const file = process.env.TSNET_CRASH_LOG;
  if (file) fs.appendFileSync(file, `${new Date().toISOString()} ${line}\n`);
}

/** The k to crash at, from the traced run's lines: every one, or the last step of each call in `calls`. */
export function chooseCrashPoints(steps: string[], calls: readonly string[] | 'all'): number[] {
  const all = steps.map((_, i) => i + 1);
  if (calls === 'all') return all;
  const callOf = (l: string | undefined) => l?.split(' ').at(-1) ?? '-';
  return all.filter((k) => calls.includes(callOf(steps[k - 1])) && callOf(steps[k]) !== callOf(steps[k - 1]));
}

/** Registers one test per scenario; each prints its crash points and fails listing every one that leaked or broke. */
export function crashSweepTests(env: E2EEnv, scenarios: () => Scenario[], ciSample: Readonly<Record<string, readonly string[]>>, timeoutMs: number, names: readonly string[]): void {
  const sweep = new CrashSweep(env);
  for (const name of names) {
    const only = POINTS?.get(name);
    const calls: readonly string[] | 'all' | undefined = POINTS ? (only ? 'all' : undefined) : FULL_SWEEP ? 'all' : Object.hasOwn(ciSample, name) ? ciSample[name] : undefined;
    (calls ? test : test.skip)(`crash at every chosen step of scenario ${name}: store and kernel agree, nothing leaks, dockerd's view works`, async () => {
      const s = scenarios().find((x) => x.name === name);
      if (!s) throw new Error(`no scenario ${name}`);
      await sweep.scrub(s);
      const traced = await sweep.runScenario(s, undefined);
      if (traced.failed !== undefined || traced.died) throw new Error(`the scenario fails without a crash: ${traced.failed ?? 'tsnet died'}`);
      const baseline = await sweep.recover(s);
      expect(baseline).toEqual([]);
      const steps = traced.trace.slice(traced.startSteps);
      progress(`${name}: ${steps.length} steps after ${traced.startSteps} at start:\n${steps.join('\n')}`);
      const ks = only ?? chooseCrashPoints(steps, calls ?? []);
      const outcomes: CrashOutcome[] = [];
      for (const k of ks) {
        const r = await sweep.runScenario(s, traced.startSteps + k);
        const problems: string[] = [];
        const step = r.died ? stepName(r.trace.at(-1)) : undefined;
        if (!r.died) problems.push('tsnet did not die (fewer steps than the traced run)');
        // The k-th step is not always the traced run's: background link deletions interleave with dockerd's calls.
        // The crash is checked all the same; which steps no k reached is reported below.
        const moved = r.died && stepKind(r.trace.at(-1)) !== stepKind(steps[k - 1]) ? ` (traced run's step ${k}: ${stepName(steps[k - 1])})` : '';
        problems.push(...(await sweep.recover(s, r.restarted)));
        const left = await sweep.scrub(s);
        problems.push(...left.map((l) => `scrub: ${l}`));
        outcomes.push({ k, step, problems });
        progress(`${name} k=${k}/${steps.length} ${step ?? '(no crash)'}${moved}: ${problems.length === 0 ? 'ok' : problems.join('; ')}`);
      }
      const bad = outcomes.filter((o) => o.problems.length > 0);
      const crashedAt = new Set(outcomes.flatMap((o) => (o.step === undefined ? [] : [stepKind(o.step)])));
      const missed = ks.map((k) => steps[k - 1]).filter((l) => !crashedAt.has(stepKind(l)));
      console.log(
        [
          `crash sweep ${name}: ${steps.length} steps, ${outcomes.length} crash points (${POINTS ? 'chosen' : FULL_SWEEP ? 'full' : 'CI sample'}), ${bad.length} leaked or broke; chosen steps no crash reached: ${missed.length === 0 ? 'none' : missed.map(stepName).join(', ')}`,
          ...outcomes.map((o) => `  k=${o.k} ${o.step ?? '(no crash)'}: ${o.problems.length === 0 ? 'ok' : o.problems.join('; ')}`),
        ].join('\n'),
      );
      expect(bad.map((o) => `k=${o.k} ${o.step ?? '(no crash)'}: ${o.problems.join('; ')}`)).toEqual([]);
    }, timeoutMs);
  }
}

/** A veth pair `<name>` (up) / its peer for the suite, the parent (or a VLAN's lower link) scenarios hang on. */
export function useParentVeth(name: string, peer: string): void {
  let pair: { del: () => Promise<void> } | undefined;
  beforeAll(async () => {
    pair = await vethPair(name, peer);
    await runOk('ip', ['link', 'set', name, 'up']);
  });
  afterAll(async () => {
    await pair?.del();
    await run('ip', ['link', 'del', name]);
  });
}
