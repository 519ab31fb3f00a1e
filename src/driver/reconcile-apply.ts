import { describeChain } from '../errors';
import { type FwPort, type FwWant, type Kernel, type KernelChange, KernelChangeError } from '../kernel/contract';
import { log, withLogContext } from '../log';
import { del, type Store } from '../store/contract';
import { noElements } from '../kernel/firewall-render';
import { describeRepair, firewallNeeded, firewallPatch, type Repair } from './reconcile-plan';
import { undoChanges } from './steps';
import { isAlreadyGone } from './teardown';

/** What applying a plan changes besides the kernel: the driver's state and process-held resources. */
export interface ApplyTarget {
  kernel: Kernel;
  store: Store;
  /** Before the kernel work: records and guards forwarding the changes switch on (see forwarding.ts). */
  claimForwarding(changes: KernelChange[]): Promise<void>;
  /** Forgets endpoints whose records were dropped (their removal is committed by then). */
  forgetEndpoints(ids: string[]): void;
  /** The firewall's wanted state, asked for after the kernel work (a forward guard claimed meanwhile included). */
  firewallWant(): FwWant;
  restorePorts(endpointId: string, ports: FwPort[]): Promise<void>;
}

/** A repair's kernel changes, applied as a unit: a failure undoes what it applied (removals: "already gone" is done). */
interface Unit {
  repair: Repair;
  changes: KernelChange[];
  removal: boolean;
}

function unitOf(r: Repair): Unit | undefined {
  if (r.kind === 'tombstone') return r.present ? { repair: r, changes: [{ op: 'link.del', name: r.link }], removal: true } : undefined;
  if (r.kind === 'orphan') return { repair: r, changes: [{ op: 'link.del', name: r.link }], removal: true };
  if ('changes' in r) return { repair: r, changes: r.changes, removal: false };
  return undefined;
}

const idsOf = (r: Repair) => ({ ...('networkId' in r ? { networkId: r.networkId } : {}), ...('endpointId' in r ? { endpointId: r.endpointId } : {}) });

/**
 * Every repair's link work in one kernel list (one `ip -batch` where nothing fails). A failing change fails only its
 * own repair, which is rolled back; the rest goes on. Returns the repairs that failed.
 */
async function applyUnits(kernel: Kernel, units: Unit[]): Promise<Set<Repair>> {
  const failed = new Set<Repair>();
  let next = 0;
  while (next < units.length) {
    const todo = units.slice(next);
    const flat = todo.flatMap((u) => u.changes);
    const owner = todo.flatMap((u, i) => u.changes.map(() => i));
    try {
      await kernel.apply(flat);
      return failed;
    } catch (err) {
      if (!(err instanceof KernelChangeError)) throw err;
      const i = owner[err.index];
      const unit = todo[i];
      const start = owner.indexOf(i);
      if (unit.removal && isAlreadyGone(err)) {
        // The rest of this unit's changes (none for a link deletion) and every later unit still run.
        units.splice(next + i, 1, { ...unit, changes: unit.changes.slice(err.index - start + 1) });
        next += i;
        continue;
      }
      failed.add(unit.repair);
      await withLogContext(idsOf(unit.repair), async () => {
        log.error('reconcile: repair failed', { repair: describeRepair(unit.repair), error: describeChain(err) });
        await undoChanges(kernel, unit.changes.slice(0, err.applied - start));
      });
      next += i + 1;
    }
  }
  return failed;
}

/**
 * Applies a plan (see reconcile-plan.ts): kernel work batched, then one store commit, then at most one nft
 * transaction, then the host ports. An empty plan runs nothing (the firewall only takes its wanted state in memory).
 */
export async function applyPlan(plan: readonly Repair[], target: ApplyTarget): Promise<void> {
  for (const r of plan) withLogContext(idsOf(r), () => log.info(`reconcile: ${describeRepair(r)}`));
  const units = plan.flatMap((r) => unitOf(r) ?? []);
  await target.claimForwarding(units.flatMap((u) => (u.removal ? [] : u.changes)));
  const failed = units.length > 0 ? await applyUnits(target.kernel, units) : new Set<Repair>();

  const tombstones = plan.flatMap((r) => (r.kind === 'tombstone' && !failed.has(r) ? [r.link] : []));
  const dropped = plan.flatMap((r) => (r.kind === 'endpoint-drop' ? [r.endpointId] : []));
  if (tombstones.length + dropped.length > 0) {
    await target.store.commit([...tombstones.map((l) => del('tombstone', l)), ...dropped.map((id) => del('endpoint', id))]);
    target.forgetEndpoints(dropped);
  }

  const fw = target.kernel.firewall;
  const want = target.firewallWant();
  if (plan.some((r) => r.kind === 'firewall-remove')) await fw.removeBase();
  else if (plan.some((r) => r.kind === 'firewall-sync')) await fw.sync(want);
  else if (firewallNeeded(want)) await fw.sync(want, firewallPatch(plan) ?? { add: noElements(), remove: noElements(), hook: false });

  for (const r of plan) if (r.kind === 'ports') await target.restorePorts(r.endpointId, r.ports);
}
