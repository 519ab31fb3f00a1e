import { z } from 'zod';
import { tsnetError } from '../errors';
import { excerpt } from '../log';
import type { FwElements, FwInspection } from './contract';
import { baseShape, FW_SETS, noElements, type TableShape } from './firewall-render';

/**
 * Reading tsnet's tables back: `nft -j list table FAMILY NAME` parsed with zod (another nft may print otherwise),
 * elements turned into the text an add writes (see firewall-render.ts), and the table compared with the shape the
 * base renders.
 */

const Part = z.union([z.string(), z.number()]);
const Concat = z.object({ concat: z.array(Part) });
const Key = z.union([Part, Concat]);
/** A set element, or a map element `[key, value]`. */
const Elem = z.union([Key, z.tuple([Key, Key])]);
const SetBody = z.looseObject({ name: z.string(), type: z.union([z.string(), z.array(z.string())]), map: z.string().optional(), elem: z.array(Elem).optional() });

const NftJson = z.object({ nftables: z.array(z.unknown()) });
const ChainItem = z.object({ chain: z.looseObject({ name: z.string(), type: z.string().optional(), hook: z.string().optional() }) });
const RuleItem = z.object({ rule: z.looseObject({ chain: z.string() }) });
const SetItem = z.object({ set: SetBody });
const MapItem = z.object({ map: SetBody });
/** Objects nft lists that tsnet does not check (metainfo, the table itself). */
const OtherItem = z.object({ metainfo: z.unknown() }).or(z.object({ table: z.unknown() }));

/** One listed object, or why it is not one tsnet knows. */
function parseItem(item: unknown): z.infer<typeof ChainItem> | z.infer<typeof RuleItem> | { set: z.infer<typeof SetBody>; isMap: boolean } | undefined {
  const chain = ChainItem.safeParse(item);
  if (chain.success) return chain.data;
  const rule = RuleItem.safeParse(item);
  if (rule.success) return rule.data;
  const set = SetItem.safeParse(item);
  if (set.success) return { set: set.data.set, isMap: false };
  const map = MapItem.safeParse(item);
  if (map.success) return { set: map.data.map, isMap: true };
  if (OtherItem.safeParse(item).success) return undefined;
  throw tsnetError('TSN_KERNEL', `nft -j list table: unexpected object ${excerpt(item)}`);
}

/** One of tsnet's tables as nft lists it: chains with their rule counts, sets and maps with their elements. */
export interface NftTable {
  chains: Map<string, { type?: string; hook?: string; rules: number }>;
  sets: Map<string, { map: boolean; elements: string[] }>;
}

/** The parts of a key or value; an `ifname` part is written as an nft string. */
function partsText(k: z.infer<typeof Key>, types: readonly string[]): string {
  const parts = typeof k === 'object' ? k.concat : [k];
  return parts.map((p, i) => (types[i] === 'ifname' ? `"${String(p)}"` : String(p))).join(' . ');
}

export function parseNftTable(stdout: string): NftTable {
  const parsed = NftJson.safeParse(JSON.parse(stdout));
  if (!parsed.success) throw tsnetError('TSN_KERNEL', 'nft -j list table: unexpected JSON', parsed.error);
  const table: NftTable = { chains: new Map(), sets: new Map() };
  for (const raw of parsed.data.nftables) {
    const item = parseItem(raw);
    if (!item) continue;
    if ('chain' in item) {
      const c = item.chain;
      table.chains.set(c.name, { type: c.type, hook: c.hook, rules: table.chains.get(c.name)?.rules ?? 0 });
    } else if ('rule' in item) {
      const c = table.chains.get(item.rule.chain);
      if (c) c.rules++;
    } else {
      const body = item.set;
      const types = typeof body.type === 'string' ? [body.type] : body.type;
      const elements = (body.elem ?? []).map((e) => (Array.isArray(e) ? `${partsText(e[0], types)} : ${partsText(e[1], [])}` : partsText(e, types)));
      table.sets.set(body.name, { map: item.isMap, elements });
    }
  }
  return table;
}

/** Why `t` is not what the base renders, or undefined when it is. */
function damage(family: string, t: NftTable, shape: TableShape): string | undefined {
  for (const c of shape.chains) {
    const got = t.chains.get(c.name);
    if (!got) return `chain ${family} ${c.name} is missing`;
    if (got.type !== c.type || got.hook !== c.hook) return `chain ${family} ${c.name} is ${got.type ?? '?'} hook ${got.hook ?? '?'}, not ${c.type} hook ${c.hook}`;
    if (got.rules !== c.rules) return `chain ${family} ${c.name} has ${got.rules} rules, not ${c.rules}`;
  }
  for (const [names, map] of [[shape.sets, false], [shape.maps, true]] as const) {
    for (const n of names) if (t.sets.get(n)?.map !== map) return `${map ? 'map' : 'set'} ${family} ${n} is missing`;
  }
  return undefined;
}

/** The inspection of both tables (undefined: absent) against the base's shape. */
export function inspection(tables: Record<'inet' | 'bridge', NftTable | undefined>, hookMissing: boolean): FwInspection {
  const { inet, bridge } = tables;
  if (!inet && !bridge) return { table: 'absent', elements: noElements(), hookMissing };
  const shape = baseShape();
  const why = !inet ? 'table inet is missing' : !bridge ? 'table bridge is missing' : (damage('inet', inet, shape.inet) ?? damage('bridge', bridge, shape.bridge));
  if (why !== undefined || !inet || !bridge) return { table: 'damaged', why: why ?? 'table missing', elements: noElements(), hookMissing };
  const elements: FwElements = noElements();
  for (const set of FW_SETS) elements[set] = (set === 'noiccports' ? bridge : inet).sets.get(set)?.elements ?? [];
  return { table: 'intact', elements, hookMissing };
}

/** Two iptables rules as token lists, hex numbers (the mark) compared by value. */
export function sameRule(a: readonly string[], b: readonly string[]): boolean {
  const norm = (t: string) => t.replace(/0x[0-9a-f]+/gi, (h) => `0x${parseInt(h, 16).toString(16)}`);
  return a.length === b.length && a.every((t, i) => norm(t) === norm(b[i]));
}
