import { tsnetError } from '../errors';
import type { KernelChange, LinkInfo } from '../kernel/contract';
import { dummyNameFor, isGeneratedLink, validateIfName } from '../kernel/names';
import { overlaps, tryParseCidr } from '../netaddr';
import { del, put, type StoreOp } from '../store/contract';
import type { ChildNetworkRecord, IpvlanSettings, NetworkRecord, ParentRecord, ParentSpec } from '../store/records';
import type { HostView } from './mode';
import type { Step } from './steps';

/**
 * The parents of child-link (macvlan, ipvlan) networks, in one place for both modes: which link `-o parent` names
 * and how tsnet gets it (a NIC as it is, an 802.1Q subinterface or a dummy tsnet makes), whether it may carry the
 * network (checked against the host and the other networks), and the shared, reference-counted records saying who
 * uses it and whether tsnet owns it. The driver calls claim/release under its `topology` lock.
 */

export const PARENT_OPTION = 'parent';

/** A parent as `-o parent` names it. */
export interface ParentChoice {
  link: string;
  spec: ParentSpec;
}

/**
 * Parses `-o parent`. `NAME.ID` is the 802.1Q subinterface of NAME with VLAN id ID (1-4094, no leading zero, so
 * one VLAN has one name); absent or empty means the network's own dummy link (an internal network, as Docker).
 */
export function parseParent(value: string | undefined, networkId: string, mode: string): ParentChoice {
  if (value === undefined || value === '') return { link: dummyNameFor(networkId), spec: { kind: 'dummy' } };
  const field = `option ${PARENT_OPTION} (mode=${mode})`;
  const link = validateIfName(value, field);
  const dot = link.lastIndexOf('.');
  if (dot < 0) return { link, spec: { kind: 'nic' } };
  const lower = link.slice(0, dot);
  const id = link.slice(dot + 1);
  const vlanId = Number(id);
  if (!/^[1-9][0-9]{0,3}$/.test(id) || vlanId > 4094 || lower === '' || lower.endsWith('.')) {
    throw tsnetError('TSN_INVALID_OPTION', `${field} "${link}": a name with a dot is an 802.1Q subinterface NAME.ID, with a VLAN id from 1 to 4094`);
  }
  return { link, spec: { kind: 'vlan', lower: validateIfName(lower, `${field} "${link}": the VLAN's lower link`), vlanId } };
}

/** What a network asks of its parent. */
export interface ParentUse extends ParentChoice {
  networkId: string;
  mode: ChildNetworkRecord['mode'];
  /** macvlan_mode=passthru: the parent carries this network's one child and nothing else. */
  passthru: boolean;
  /** An ipvlan network's mode and flag: the kernel keeps one of each per parent, for all its ipvlan children. */
  ipvlan?: IpvlanSettings;
  /** The network's subnets (CIDR). */
  subnets: string[];
}

function isChild(n: NetworkRecord): n is ChildNetworkRecord {
  return n.mode !== 'bridge';
}

const short = (id: string) => id.slice(0, 12);

/** The child links (macvlan, ipvlan) the host has on `parent`, whoever made them. */
async function childrenOn(parent: string, host: HostView): Promise<LinkInfo[]> {
  return (await host.links()).filter((l) => l.lower === parent && (l.kind === 'macvlan' || l.kind === 'ipvlan'));
}

/**
 * Refuses a parent that cannot carry the network, naming it: a link of another tsnet network or one tsnet generated,
 * a bridge port, a missing or down link tsnet does not own (tsnet never changes those), a parent with children of
 * the other kind (the kernel refuses macvlan and ipvlan children on one parent), passthru on a parent in use or any
 * network on a passthru network's parent, and subnets overlapping another network's on the same parent.
 */
export async function checkParent(use: ParentUse, host: HostView): Promise<void> {
  const { link, spec } = use;
  const refuse = (why: string): never => {
    throw tsnetError('TSN_INVALID_OPTION', `option ${PARENT_OPTION}="${link}" (mode=${use.mode}): ${why}`);
  };
  const shared = host.parents.get(link);
  if (!shared && host.claimed.has(link)) refuse('the link belongs to another tsnet network');
  const others = host.networks.filter(isChild).filter((n) => n.parent === link);
  for (const n of others) {
    if (n.mode !== use.mode) refuse(`${n.mode} network ${short(n.id)} uses it, and a parent carries macvlan or ipvlan links, never both`);
    if (n.mode === 'macvlan' && n.settings.macvlanMode === 'passthru') refuse(`macvlan_mode=passthru network ${short(n.id)} holds it alone`);
    if (use.passthru) refuse(`macvlan_mode=passthru needs the parent alone, and network ${short(n.id)} uses it`);
    // A second mode would switch every child of the parent, other networks' included, at its first Join.
    if (n.mode === 'ipvlan' && use.ipvlan && (n.settings.ipvlanMode !== use.ipvlan.ipvlanMode || n.settings.ipvlanFlag !== use.ipvlan.ipvlanFlag))
      refuse(
        `ipvlan network ${short(n.id)} uses it with ipvlan_mode=${n.settings.ipvlanMode} ipvlan_flag=${n.settings.ipvlanFlag}, and the kernel keeps one mode and flag per parent`,
      );
    for (const mine of use.subnets) {
      const a = tryParseCidr(mine);
      const clash = n.ipv4.concat(n.ipv6).find((s) => {
        const b = tryParseCidr(s.pool);
        return a !== undefined && b !== undefined && overlaps(a, b);
      });
      if (clash) refuse(`subnet ${mine} overlaps subnet ${clash.pool} of network ${short(n.id)} on the same parent`);
    }
  }
  // The whole list first: the children on the parent are needed anyway, and the lookup then costs no second read.
  const all = await host.links();
  const info = all.find((l) => l.name === link);
  if (info) {
    // A generated link is only ever its own network's parent (a parent-less network's dummy): never another's.
    if (isGeneratedLink(info) && info.kind !== 'vlan' && spec.kind !== 'dummy') refuse(`a ${info.kind} link tsnet generated cannot be a parent`);
    if (!shared?.owned) checkForeign(info, refuse);
    const children = await childrenOn(link, host);
    const other = children.find((c) => c.kind !== use.mode);
    if (other) refuse(`${other.kind} link ${other.name} is on it, and a parent carries macvlan or ipvlan links, never both`);
    if (use.passthru && children.length > 0)
      refuse(`macvlan_mode=passthru needs the parent alone, and ${children[0].kind} link ${children[0].name} is on it`);
    return;
  }
  switch (spec.kind) {
    case 'nic':
      return refuse('no such link');
    case 'dummy':
      return;
    case 'vlan': {
      const lower = await host.link(spec.lower);
      if (!lower) return refuse(`the VLAN's lower link ${spec.lower} does not exist`);
      // A parent another network uses may carry VLANs too (untagged eth1 and tagged eth1.10 together), unless tsnet
      // made it: it is deleted with its last network, and the VLAN's children would die with it.
      const under = host.parents.get(spec.lower);
      if (under?.owned)
        refuse(`the VLAN's lower link ${spec.lower} is a parent tsnet created for network ${under.users.map(short).join(', ')}, deleted with its last network`);
      if ((!under && host.claimed.has(spec.lower)) || (isGeneratedLink(lower) && lower.kind !== 'vlan'))
        refuse(`the VLAN's lower link ${spec.lower} belongs to tsnet`);
      checkForeign(lower, (why) => refuse(`the VLAN's lower link ${spec.lower}: ${why}`));
      const twin = (await host.links()).find((l) => l.kind === 'vlan' && l.lower === spec.lower && l.vlanId === spec.vlanId);
      if (twin) refuse(`VLAN ${spec.vlanId} of ${spec.lower} exists as ${twin.name}; name that link as the parent`);
      return;
    }
  }
}

/** A link tsnet does not own is never changed: one that would need changing is refused. */
function checkForeign(info: LinkInfo, refuse: (why: string) => never): void {
  if (info.master !== undefined) refuse(`the link is a port of bridge ${info.master}`);
  if (!info.up) refuse(`the link is down, and tsnet does not change links it did not create (ip link set ${info.name} up)`);
}

/** The changes making an owned parent (missing: create and bring up; down: bring up). */
function ownedParentChanges(link: string, spec: ParentSpec, info: LinkInfo | undefined): KernelChange[] {
  if (info) return info.up ? [] : [{ op: 'link.up', name: link }];
  const up: KernelChange = { op: 'link.up', name: link };
  switch (spec.kind) {
    case 'vlan':
      return [{ op: 'vlan.add', name: link, parent: spec.lower, vlanId: spec.vlanId }, up];
    case 'dummy':
      return [{ op: 'dummy.add', name: link }, up];
    case 'nic':
      // A NIC is never tsnet's: nothing can make it again.
      return [];
  }
}

/** A network taking its parent: the record to commit with the network and the steps making the link if tsnet must. */
export interface ParentClaim {
  record: ParentRecord;
  steps: Step[];
}

/**
 * `networkId` takes `choice`. The first user decides ownership: tsnet owns the link when it has to make it, when it
 * is its own dummy (a name only tsnet uses), or when it carries this instance's owner tag (tsnet made it for an
 * earlier network and its deletion failed: it stays tsnet's); later users share the record, ownership and all.
 */
export function claimParent(
  current: ParentRecord | undefined,
  choice: ParentChoice,
  info: LinkInfo | undefined,
  networkId: string,
  owner: string,
): ParentClaim {
  const owned = info === undefined || choice.spec.kind === 'dummy' || info.owner === owner;
  const record: ParentRecord = current
    ? { ...current, users: [...current.users.filter((u) => u !== networkId), networkId] }
    : { link: choice.link, owned, spec: choice.spec, users: [networkId] };
  const changes = record.owned ? ownedParentChanges(record.link, record.spec, info) : [];
  return { record, steps: changes.length > 0 ? [{ name: 'parent link', changes }] : [] };
}

/** A network leaving its parent: the store ops (committed with the network's removal) and the link to delete. */
export function releaseParent(current: ParentRecord | undefined, networkId: string): { ops: StoreOp[]; links: string[]; next?: ParentRecord } {
  if (!current) return { ops: [], links: [] };
  const users = current.users.filter((u) => u !== networkId);
  if (users.length > 0) {
    const next = { ...current, users };
    return { ops: [put('parent', current.link, next)], links: [], next };
  }
  return { ops: [del('parent', current.link)], links: current.owned ? [current.link] : [] };
}

/**
 * After a restart: an owned parent that went missing or down is made again; a foreign one is the operator's (the
 * reconcile plan says so).
 */
export function parentRepairSteps(rec: ParentRecord, info: LinkInfo | undefined): Step[] {
  if (!rec.owned) return [];
  const changes = ownedParentChanges(rec.link, rec.spec, info);
  return changes.length > 0 ? [{ name: `parent link ${rec.link}`, changes }] : [];
}
