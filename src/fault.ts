import fs from 'node:fs';
import { assertNever, tsnetError } from './errors';
import { type Firewall, type Kernel, type KernelChange, KernelChangeError } from './kernel/contract';
import { logContext } from './log';
import type { Store, StoreOp } from './store/contract';

/**
 * TEST-ONLY fault injection (the crash-point sweep, test/e2e/crash-points.test.ts). Never set these in production:
 *
 * - `TSNET_FAULT_EXIT_AFTER=k`: right after the k-th counted step completes, the process dies at once (SIGKILL to
 *   itself: nothing flushed, no handler runs). Counted steps: each kernel change (apply runs one change at a time
 *   while the switch is on), each firewall call that changes the table, each store commit; the background lane's
 *   too. Startup (reconcile) counts like any other work.
 * - `TSNET_FAULT_TRACE=FILE`: appends one line per counted step, `<n> <kind> <name> <plugin call or ->`, so a test
 *   learns the steps of a scenario (the line of the k-th step is written before the kill).
 *
 * With neither set, {@link withFaults} returns its arguments untouched: no wrapper, no cost.
 */
export const FAULT_EXIT_AFTER_ENV = 'TSNET_FAULT_EXIT_AFTER';
export const FAULT_TRACE_ENV = 'TSNET_FAULT_TRACE';

export interface FaultSwitch {
  /** Die after this many counted steps; undefined: only trace. */
  exitAfter?: number;
  /** Receives each trace line (without the newline). */
  trace?: (line: string) => void;
  /** How the process dies (tests inject their own). */
  kill: () => void;
}

/** The switch as the environment sets it, or undefined when it is off. */
export function faultSwitchFromEnv(env: NodeJS.ProcessEnv): FaultSwitch | undefined {
  const after = env[FAULT_EXIT_AFTER_ENV];
  const file = env[FAULT_TRACE_ENV];
  if (after === undefined && file === undefined) return undefined;
  if (after !== undefined && !/^[1-9][0-9]{0,8}$/.test(after)) {
    throw tsnetError('TSN_INVALID_OPTION', `${FAULT_EXIT_AFTER_ENV}="${after.slice(0, 20)}": expected a step number ≥ 1`);
  }
  return {
    ...(after !== undefined ? { exitAfter: Number(after) } : {}),
    // Synchronous: the line must be on disk before the kill that may follow it.
    ...(file !== undefined ? { trace: (line: string) => fs.appendFileSync(file, line + '\n') } : {}),
    kill: () => process.kill(process.pid, 'SIGKILL'),
  };
}

export type StepKind = 'kernel' | 'kernel-bg' | 'firewall' | 'store';

/** Counts steps across every wrapped part (one sequence for the whole process). */
export class StepCounter {
  private count = 0;

  constructor(private readonly sw: FaultSwitch) {}

  /** Called after a step completed: traces it, and kills when it is the k-th. */
  completed(kind: StepKind, name: string): void {
    this.count++;
    this.sw.trace?.(`${this.count} ${kind} ${name} ${logContext()?.call ?? '-'}`);
    if (this.count === this.sw.exitAfter) this.sw.kill();
  }

  get steps(): number {
    return this.count;
  }
}

/** Trace name of a kernel change: its op and the object it concerns. */
export function changeName(c: KernelChange): string {
  // Link changes name their link; the rest name what they touch.
  if ('name' in c) return `${c.op} ${c.name}`;
  switch (c.op) {
    case 'addr.add':
    case 'addr.del':
      return `${c.op} ${c.dev} ${c.cidr}`;
    case 'route.add':
    case 'route.del':
      return `${c.op} ${c.dev} ${c.dst}`;
    case 'sysctl.set':
      return `${c.op} ${c.key}=${c.value}`;
    default:
      return assertNever(c, 'kernel change');
  }
}

/** Trace name of a commit: its first ops (a commit may carry many tombstones). */
function commitName(ops: StoreOp[]): string {
  const shown = ops.slice(0, 3).map((o) => `${o.kind}:${o.collection}/${o.key.slice(0, 12)}`);
  return ops.length > 3 ? `${shown.join(',')},+${ops.length - 3}` : shown.join(',');
}

/**
 * Whether each firewall method changes the table (true: counted) or only reads it. Exhaustive over {@link Firewall}:
 * a new method does not compile until it is classified here.
 */
const FIREWALL_METHODS: Record<keyof Firewall, boolean> = {
  sync: true,
  removeBase: true,
  addNetwork: true,
  removeNetwork: true,
  addPorts: true,
  removePorts: true,
  addNoIccPorts: true,
  removeNoIccPorts: true,
  setForwardGuard: true,
  refreshDockerBridges: true,
  inspect: false,
  intact: false,
};

const COUNTED_FIREWALL_METHODS = new Set(Object.entries(FIREWALL_METHODS).flatMap(([name, changes]) => (changes ? [name] : [])));

/**
 * `target` with the members in `over` replaced; every other member is the target's own (methods bound to it), so
 * the result keeps the target's full type (Iproute2Kernel's close(), SqliteStore's extras).
 */
function overlay<T extends object>(target: T, over: (prop: string | symbol) => unknown): T {
  return new Proxy(target, {
    get(t, prop) {
      const replaced = over(prop);
      if (replaced !== undefined) return replaced;
      const v: unknown = Reflect.get(t, prop, t);
      return typeof v === 'function' ? (...args: unknown[]): unknown => Reflect.apply(v, t, args) : v;
    },
  });
}

function countedFirewall(fw: Firewall, counter: StepCounter): Firewall {
  return overlay(fw, (prop) => {
    if (typeof prop !== 'string' || !COUNTED_FIREWALL_METHODS.has(prop)) return undefined;
    const method: unknown = Reflect.get(fw, prop, fw);
    if (typeof method !== 'function') return undefined;
    return async (...args: unknown[]): Promise<unknown> => {
      const result: unknown = await Reflect.apply(method, fw, args);
      counter.completed('firewall', prop);
      return result;
    };
  });
}

/** One change at a time, each counted when done; a failure reports its index in the whole list. */
async function applyCounted(kernel: Kernel, changes: KernelChange[], counter: StepCounter, kind: StepKind): Promise<void> {
  for (const [i, c] of changes.entries()) {
    try {
      await kernel.apply([c]);
    } catch (err) {
      if (err instanceof KernelChangeError) throw new KernelChangeError(c, i, err.message, err.applied > 0);
      throw err;
    }
    counter.completed(kind, changeName(c));
  }
}

function countedKernel<K extends Kernel>(kernel: K, counter: StepCounter, kind: StepKind, firewall: Firewall): K {
  let background: Kernel | undefined;
  const counted: K = overlay(kernel, (prop) => {
    switch (prop) {
      case 'apply':
        return (changes: KernelChange[]) => applyCounted(kernel, changes, counter, kind);
      case 'firewall':
        return firewall;
      case 'background':
        // The background lane's own lane is itself (as Iproute2Kernel's is).
        if (kind === 'kernel-bg') return counted;
        background ??= countedKernel(kernel.background, counter, 'kernel-bg', firewall);
        return background;
      default:
        return undefined;
    }
  });
  return counted;
}

function countedStore<S extends Store>(store: S, counter: StepCounter): S {
  return overlay(store, (prop) =>
    prop === 'commit'
      ? async (ops: StoreOp[]) => {
          await store.commit(ops);
          if (ops.length > 0) counter.completed('store', commitName(ops));
        }
      : undefined,
  );
}

/** The kernel and the store, counted when the switch is on (see the top of this file); untouched when it is off. */
export function withFaults<K extends Kernel, S extends Store>(kernel: K, store: S, sw: FaultSwitch | undefined = faultSwitchFromEnv(process.env)): { kernel: K; store: S } {
  if (!sw) return { kernel, store };
  const counter = new StepCounter(sw);
  return { kernel: countedKernel(kernel, counter, 'kernel', countedFirewall(kernel.firewall, counter)), store: countedStore(store, counter) };
}
