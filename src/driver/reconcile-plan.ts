import { assertNever } from '../errors';
import type { FwFamily, FwInspection, FwPatch, FwPort, FwSetName, FwWant, KernelChange, LinkInfo, RouteInfo } from '../kernel/contract';
import { diffElements, FW_SETS, noElements, wantedElements } from '../kernel/firewall-render';
import { isDockerBridge, isGeneratedLink } from '../kernel/names';
import type { EndpointRecord, NetworkRecord, ParentRecord } from '../store/records';
import type { BoundNetwork } from './mode';
import { modeOf } from './modes';
import { parentRepairSteps } from './parent';
import { linkCreated } from './steps';

/**
 * Reconcile's decision, pure: from the records and the host as read once in bulk (links with their addresses,
 * routes, the sysctls the records imply, the firewall as inspected), the list of repairs that makes the host match
 * the records. Applying it is reconcile-apply.ts; `tsnet reconcile --dry-run` and `doctor` print it (one line per
 * repair, {@link describeRepair}). Nothing differing means an empty plan.
 */

/** What the plan is computed from. */
export interface ReconcileInput {
  /** This instance's owner tag: only links carrying it are ever deleted as orphans. */
  owner: string;
  networks: readonly NetworkRecord[];
  endpoints: readonly EndpointRecord[];
  parents: readonly ParentRecord[];
  /** Links whose deletion was committed and may not have happened. */
  tombstones: readonly string[];
  /** Families whose forwarding tsnet turned on (host sysctl records): their guard stays in the firewall. */
  forwardGuard: readonly FwFamily[];
  /** The host's links, by name, from one listing. */
  links: ReadonlyMap<string, LinkInfo>;
  routes: readonly RouteInfo[];
  /** Values of the sysctls repairs would write ({@link sysctlsToRead}); undefined: none by that key. */
  sysctls: ReadonlyMap<string, string | undefined>;
  firewall: FwInspection;
  /** Endpoints whose published ports this process holds (none right after a start). */
  heldPorts: ReadonlySet<string>;
}

/** One repair: what it changes, for which network or endpoint, and why. */
export type Repair =
  | { kind: 'tombstone'; link: string; present: boolean; why: string }
  | { kind: 'parent'; parent: string; changes: KernelChange[]; why: string }
  /** A link records need that tsnet does not own and cannot make (a NIC parent, an adopted bridge). */
  | { kind: 'link-lost'; link: string; networkIds: string[]; why: string }
  | { kind: 'network'; networkId: string; step: string; changes: KernelChange[]; why: string }
  | { kind: 'endpoint-changes'; networkId: string; endpointId: string; changes: KernelChange[]; why: string }
  | { kind: 'endpoint-rebuild'; networkId: string; endpointId: string; changes: KernelChange[]; why: string }
  | { kind: 'endpoint-drop'; networkId: string; endpointId: string; why: string }
  | { kind: 'endpoint-lost'; networkId: string; endpointId: string; why: string }
  | { kind: 'orphan'; link: string; why: string }
  | { kind: 'firewall-sync'; why: string }
  | { kind: 'firewall-elements'; set: FwSetName; add: string[]; remove: string[]; why: string }
  | { kind: 'firewall-hook'; why: string }
  | { kind: 'firewall-remove'; why: string }
  | { kind: 'ports'; networkId: string; endpointId: string; ports: FwPort[]; why: string };

const short = (id: string) => id.slice(0, 12);

/** How many repairs of each kind a plan holds: the drift between the store and the kernel, for telemetry. */
export function driftByKind(plan: readonly Repair[]): Partial<Record<Repair['kind'], number>> {
  const out: Partial<Record<Repair['kind'], number>> = {};
  for (const r of plan) out[r.kind] = (out[r.kind] ?? 0) + 1;
  return out;
}

/** One change as a person reads it. */
export function describeChange(c: KernelChange): string {
  switch (c.op) {
    case 'bridge.add':
      return `create bridge ${c.name}`;
    case 'veth.add':
      return `create veth ${c.name}/${c.peer}`;
    case 'macvlan.add':
      return `create macvlan ${c.name} on ${c.parent}`;
    case 'ipvlan.add':
      return `create ipvlan ${c.name} on ${c.parent}`;
    case 'vlan.add':
      return `create VLAN ${c.name} (${c.parent} id ${c.vlanId})`;
    case 'dummy.add':
      return `create dummy ${c.name}`;
    case 'link.master':
      return `attach ${c.name} to ${c.master}`;
    case 'link.up':
      return `bring ${c.name} up`;
    case 'link.del':
      return `delete ${c.name}`;
    case 'addr.add':
      return `add ${c.cidr} to ${c.dev}`;
    case 'addr.del':
      return `remove ${c.cidr} from ${c.dev}`;
    case 'route.add':
      return `add route ${c.dst} dev ${c.dev}`;
    case 'route.del':
      return `remove route ${c.dst} dev ${c.dev}`;
    case 'sysctl.set':
      return `set ${c.key}=${c.value}`;
    default:
      return assertNever(c, 'kernel change');
  }
}

const changesText = (changes: readonly KernelChange[]) => changes.map(describeChange).join(', ');
const elementsText = (xs: readonly string[]) => (xs.length > 4 ? `${xs.slice(0, 4).join(', ')} and ${xs.length - 4} more` : xs.join(', '));

/** The repair as one line: what, for whom, why. */
export function describeRepair(r: Repair): string {
  switch (r.kind) {
    case 'tombstone':
      return r.present ? `delete link ${r.link} (${r.why})` : `forget tombstone of ${r.link} (${r.why})`;
    case 'parent':
      return `parent ${r.parent}: ${changesText(r.changes)} (${r.why})`;
    case 'link-lost':
      return `link ${r.link} of network ${r.networkIds.map(short).join(', ')} is missing: recreate it to restore the network (${r.why})`;
    case 'network':
      return `network ${short(r.networkId)}: ${r.step}: ${changesText(r.changes)} (${r.why})`;
    case 'endpoint-changes':
    case 'endpoint-rebuild':
      return `endpoint ${short(r.endpointId)} of network ${short(r.networkId)}: ${changesText(r.changes)} (${r.why})`;
    case 'endpoint-drop':
      return `endpoint ${short(r.endpointId)}: drop its record (${r.why})`;
    case 'endpoint-lost':
      return `endpoint ${short(r.endpointId)} of network ${short(r.networkId)}: cannot be restored (${r.why})`;
    case 'orphan':
      return `delete orphan link ${r.link} (${r.why})`;
    case 'firewall-sync':
      return `firewall: rebuild the whole table (${r.why})`;
    case 'firewall-elements':
      return `firewall: ${[r.add.length ? `add ${elementsText(r.add)} to ${r.set}` : '', r.remove.length ? `remove ${elementsText(r.remove)} from ${r.set}` : ''].filter(Boolean).join('; ')} (${r.why})`;
    case 'firewall-hook':
      return `firewall: add tsnet's DOCKER-USER/FORWARD rules (${r.why})`;
    case 'firewall-remove':
      return `firewall: remove tsnet's table (${r.why})`;
    case 'ports':
      return `endpoint ${short(r.endpointId)}: hold host ports ${r.ports.map((p) => `${p.hostIp ?? '*'}:${p.hostPort}/${p.proto}`).join(', ')} (${r.why})`;
    default:
      return assertNever(r, 'repair');
  }
}

/** Why a repair step's change is needed, from what the host shows. */
function whyChange(c: KernelChange, links: ReadonlyMap<string, LinkInfo>, sysctls: ReadonlyMap<string, string | undefined>): string {
  const made = linkCreated(c);
  if (made !== undefined) return links.has(made) ? describeChange(c) : `${made} is missing`;
  if (c.op === 'addr.add') return `${c.cidr} missing on ${c.dev}`;
  if (c.op === 'link.up') return `${c.name} is down`;
  if (c.op === 'link.master') return `${c.name} is not on ${c.master}`;
  if (c.op === 'route.add') return `no route ${c.dst} dev ${c.dev}`;
  if (c.op === 'sysctl.set') return `${c.key} is ${sysctls.get(c.key) ?? 'unread'}`;
  return describeChange(c);
}

function whyChanges(changes: readonly KernelChange[], links: ReadonlyMap<string, LinkInfo>, sysctls: ReadonlyMap<string, string | undefined>): string {
  return [...new Set(changes.map((c) => whyChange(c, links, sysctls)))].join(', ');
}

/** The host's links once `gone` are deleted: a veth takes its peer along, a parent its stacked children. */
function without(links: ReadonlyMap<string, LinkInfo>, gone: readonly string[]): Map<string, LinkInfo> {
  const out = new Map(links);
  for (const name of gone) {
    const l = out.get(name);
    if (!l) continue;
    out.delete(name);
    if (l.kind === 'veth' && l.lower) out.delete(l.lower);
    for (const other of [...out.values()]) if (other.lower === name && other.kind !== 'veth') out.delete(other.name);
  }
  return out;
}

/** What the firewall must hold for these records and host links. */
export function firewallWant(networks: readonly NetworkRecord[], endpoints: readonly EndpointRecord[], forwardGuard: readonly FwFamily[], links: Iterable<LinkInfo>): FwWant {
  const byId = new Map(networks.map((n) => [n.id, modeOf(n)]));
  return {
    networks: [...byId.values()].flatMap((m) => m.firewallView() ?? []),
    ports: endpoints.flatMap((e) => (byId.has(e.networkId) ? (e.ports ?? []) : [])),
    noIccPorts: endpoints.flatMap((e) => {
      const m = byId.get(e.networkId);
      return m ? noIccPortsOf(m, e) : [];
    }),
    host: { dockerBridges: [...links].filter(isDockerBridge).map((l) => l.name).sort(), forwardGuard: [...forwardGuard].sort() },
  };
}

/** The endpoint's bridge ports the firewall keeps apart (none on icc=true networks). */
export function noIccPortsOf(mode: BoundNetwork, ep: EndpointRecord): string[] {
  const view = mode.firewallView();
  return !view || view.icc ? [] : mode.endpointLinks(ep);
}

/** tsnet's table must exist: a network has a firewall part, or a forward guard holds (see forwarding.ts). */
export function firewallNeeded(want: FwWant): boolean {
  return want.networks.length > 0 || want.host.forwardGuard.length > 0;
}

/** The firewall's part of a plan: nothing, a removal, a full sync, or element and hook patches. */
export function planFirewall(want: FwWant, have: FwInspection): Repair[] {
  if (!firewallNeeded(want)) return have.table === 'absent' ? [] : [{ kind: 'firewall-remove', why: 'no network or forward guard needs it' }];
  if (have.table === 'absent') return [{ kind: 'firewall-sync', why: 'table missing' }];
  if (have.table === 'damaged') return [{ kind: 'firewall-sync', why: have.why ?? 'table damaged' }];
  const { add, remove } = diffElements(wantedElements(want), have.elements);
  const repairs: Repair[] = FW_SETS.flatMap((set): Repair[] =>
    add[set].length + remove[set].length === 0
      ? []
      : [{ kind: 'firewall-elements', set, add: add[set], remove: remove[set], why: [add[set].length ? 'missing' : '', remove[set].length ? 'no record has them' : ''].filter(Boolean).join('; ') }],
  );
  if (have.hookMissing) repairs.push({ kind: 'firewall-hook', why: 'DOCKER-USER or FORWARD lacks it' });
  return repairs;
}

/** The firewall patch of a plan's element and hook repairs (undefined when it has none). */
export function firewallPatch(plan: readonly Repair[]): FwPatch | undefined {
  let patch: FwPatch | undefined;
  for (const r of plan) {
    if (r.kind !== 'firewall-elements' && r.kind !== 'firewall-hook') continue;
    patch ??= { add: noElements(), remove: noElements(), hook: false };
    if (r.kind === 'firewall-hook') patch.hook = true;
    else {
      patch.add[r.set].push(...r.add);
      patch.remove[r.set].push(...r.remove);
    }
  }
  return patch;
}

/**
 * The steps' changes without the sysctl writes the host already has, in order. A link the steps make keeps every
 * write of its own (its sysctls start at the host's defaults, whatever was read under its name before).
 */
function stepChanges(steps: ReturnType<BoundNetwork['repairSteps']>, sysctls: ReadonlyMap<string, string | undefined>): Array<{ step: string; changes: KernelChange[] }> {
  const all = steps.map((s) => ({ step: s.name, changes: 'changes' in s ? s.changes : [] }));
  const made = all.flatMap((s) => s.changes.flatMap((c) => linkCreated(c) ?? [])).map((name) => `/${name}/`);
  const needed = (c: KernelChange) => c.op !== 'sysctl.set' || sysctls.get(c.key) !== c.value || made.some((m) => c.key.includes(m));
  return all.map((s) => ({ ...s, changes: s.changes.filter(needed) })).filter((s) => s.changes.length > 0);
}

/** The plan: see the module comment. Repairs come in the order they must be applied. */
export function planReconcile(input: ReconcileInput): Repair[] {
  const { owner, sysctls } = input;
  const plan: Repair[] = [];
  // Tombstoned links go first: their names may be made again below.
  for (const link of input.tombstones) {
    const present = input.links.has(link);
    plan.push({ kind: 'tombstone', link, present, why: present ? 'its teardown was interrupted' : 'already gone' });
  }
  const links = without(input.links, input.tombstones);
  const wanted = new Set<string>();
  for (const p of input.parents) {
    wanted.add(p.link);
    if (!p.owned && !links.has(p.link)) plan.push({ kind: 'link-lost', link: p.link, networkIds: p.users, why: 'tsnet did not create it, so it does not make it' });
    for (const { changes } of stepChanges(parentRepairSteps(p, links.get(p.link)), sysctls)) {
      plan.push({ kind: 'parent', parent: p.link, changes, why: whyChanges(changes, links, sysctls) });
    }
  }
  const modes = new Map(input.networks.map((n) => [n.id, modeOf(n)]));
  for (const [id, mode] of modes) {
    for (const l of mode.networkLinks()) wanted.add(l);
    const steps = stepChanges(mode.repairSteps(links), sysctls);
    const made = new Set(steps.flatMap((s) => s.changes.flatMap((c) => linkCreated(c) ?? [])));
    for (const l of mode.networkLinks()) {
      if (!links.has(l) && !made.has(l)) plan.push({ kind: 'link-lost', link: l, networkIds: [id], why: 'tsnet adopted it, so it does not make it' });
    }
    for (const { step, changes } of steps) plan.push({ kind: 'network', networkId: id, step, changes, why: whyChanges(changes, links, sysctls) });
  }
  const host = { links, routes: input.routes };
  const kept: EndpointRecord[] = [];
  for (const ep of input.endpoints) {
    const ids = { networkId: ep.networkId, endpointId: ep.id };
    const mode = modes.get(ep.networkId);
    if (!mode) {
      plan.push({ kind: 'endpoint-drop', ...ids, why: 'its network has no record' });
      continue;
    }
    kept.push(ep);
    const repair = mode.endpointRepair(ep, host);
    for (const l of repair.wanted) wanted.add(l);
    if (repair.lost !== undefined) plan.push({ kind: 'endpoint-lost', ...ids, why: repair.lost });
    if (repair.changes?.length) plan.push({ kind: 'endpoint-changes', ...ids, changes: repair.changes, why: whyChanges(repair.changes, links, sysctls) });
    if (repair.rebuild) plan.push({ kind: 'endpoint-rebuild', ...ids, changes: mode.endpointSetupChanges(ep), why: `${repair.wanted.join(', ')} missing, never joined` });
  }
  // Only links carrying this instance's owner tag: another tsnet's links look the same by name. A veth whose peer
  // is wanted stays too: deleting it would take the wanted end along.
  for (const l of links.values()) {
    if (l.owner !== owner || !isGeneratedLink(l) || wanted.has(l.name)) continue;
    if (l.kind === 'veth' && l.lower !== undefined && wanted.has(l.lower)) continue;
    plan.push({ kind: 'orphan', link: l.name, why: `${l.kind} with tsnet's owner tag, no record has it` });
  }
  const want = firewallWant(input.networks, kept, input.forwardGuard, links.values());
  plan.push(...planFirewall(want, input.firewall));
  for (const ep of kept) {
    if (ep.ports?.length && !input.heldPorts.has(ep.id)) plan.push({ kind: 'ports', networkId: ep.networkId, endpointId: ep.id, ports: ep.ports, why: 'not held by this process' });
  }
  return plan;
}

/** The sysctls the plan would write: read them, and plan again with their values, so only differing ones are written. */
export function sysctlsToRead(input: Omit<ReconcileInput, 'sysctls'>): string[] {
  const plan = planReconcile({ ...input, sysctls: new Map() });
  const keys = plan.flatMap((r) => ('changes' in r ? r.changes : [])).flatMap((c) => (c.op === 'sysctl.set' ? [c.key] : []));
  return [...new Set(keys)];
}
