import { assertNever, describeChain, tsnetError } from '../errors';
import { log, since } from '../log';
import { type Kernel, type KernelChange, KernelChangeError } from '../kernel/contract';
import { applyTolerant } from './teardown';

/**
 * A named setup step: kernel changes (batched with their neighbours) or an action with its own undo (firewall).
 * Steps run in order; the first failure rolls back everything already applied, newest first.
 */
export type Step =
  | { name: string; changes: KernelChange[] }
  | { name: string; run: () => Promise<void>; undo: () => Promise<void> };

/** The change that reverses `c`, or undefined when removing the link it concerns already does. */
export function inverse(c: KernelChange): KernelChange | undefined {
  switch (c.op) {
    case 'bridge.add':
    case 'veth.add':
    case 'macvlan.add':
    case 'ipvlan.add':
    case 'vlan.add':
    case 'dummy.add':
      return { op: 'link.del', name: c.name };
    case 'addr.add':
      return { op: 'addr.del', dev: c.dev, cidr: c.cidr };
    case 'route.add':
      return { op: 'route.del', dst: c.dst, dev: c.dev };
    case 'link.master':
    case 'link.up':
    case 'sysctl.set':
      // On links tsnet created these vanish with the link; on adopted links they are harmless.
      return undefined;
    case 'link.del':
    case 'addr.del':
    case 'route.del':
      // Removals are never rolled back: setup pipelines contain none.
      return undefined;
    default:
      return assertNever(c, 'kernel change');
  }
}

/** Undo changes newest first, skipping what a link deletion makes moot; best effort, logs what could not be undone. */
export async function undoChanges(kernel: Kernel, applied: KernelChange[]): Promise<void> {
  const inv = applied.map(inverse).filter((c): c is KernelChange => c !== undefined).reverse();
  const deleted = new Set(inv.flatMap((c) => (c.op === 'link.del' ? [c.name] : [])));
  const todo = inv.filter((c) => !((c.op === 'addr.del' || c.op === 'route.del') && deleted.has(c.dev)));
  await applyTolerant(kernel, todo, (err) => {
    log.warn('rollback change failed', { change: err.change, error: err.message });
    return true;
  });
}

/** Runs `steps`; on failure undoes what ran and throws TSN_KERNEL naming the step. */
export async function runSteps(kernel: Kernel, what: string, steps: Step[]): Promise<void> {
  const applied: KernelChange[] = [];
  const undos: Array<() => Promise<void>> = [];
  let i = 0;
  try {
    while (i < steps.length) {
      const step = steps[i];
      const start = performance.now();
      if ('run' in step) {
        await step.run();
        undos.push(step.undo);
        log.debug('step', { what, step: step.name, ms: since(start) });
        i++;
        continue;
      }
      // Neighbouring change steps share one kernel batch.
      let j = i;
      const batch: KernelChange[] = [];
      for (; j < steps.length; j++) {
        const s = steps[j];
        if (!('changes' in s)) break;
        batch.push(...s.changes);
      }
      try {
        await kernel.apply(batch);
      } catch (err) {
        if (err instanceof KernelChangeError) applied.push(...batch.slice(0, err.applied));
        throw err;
      }
      applied.push(...batch);
      log.debug('step', { what, step: steps.slice(i, j).map((s) => s.name).join(' + '), ms: since(start) });
      i = j;
    }
  } catch (err) {
    const failed = failedStepName(steps, i, err);
    log.warn('setup failed, rolling back', { what, step: failed, error: describeChain(err) });
    for (const undo of undos.reverse()) await undo().catch((e: unknown) => log.warn('rollback failed', { error: describeChain(e) }));
    await undoChanges(kernel, applied);
    throw tsnetError('TSN_KERNEL', `${what}: step "${failed}" failed`, err);
  }
}

function failedStepName(steps: Step[], from: number, err: unknown): string {
  if (err instanceof KernelChangeError) {
    const s = steps.slice(from).find((st) => 'changes' in st && st.changes.includes(err.change));
    if (s) return s.name;
  }
  return steps[from]?.name ?? 'unknown';
}
