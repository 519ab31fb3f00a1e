/**
 * The records every server in the DNS bench serves: N containers on one tsnet network, each with its name and an
 * alias of its own, in groups sharing a group alias (several addresses per answer, as compose services have). The
 * same names go to dnsmasq's hosts file and the dns2 server's table; Docker's embedded DNS knows them from dockerd.
 */

export interface Member {
  name: string;
  alias: string;
  group: string;
}

export interface Record extends Member {
  ip: string;
}

export const GROUP_SIZE = 5;

export function members(tag: string, n: number): Member[] {
  return Array.from({ length: n }, (_, i) => {
    const k = String(i).padStart(2, '0');
    return { name: `dnsb${tag}-c${k}`, alias: `dnsb${tag}-a${k}`, group: `dnsb${tag}-g${Math.floor(i / GROUP_SIZE)}` };
  });
}

/** `docker run` options that give a member its name and aliases on the network. */
export function runArgs(m: Member, network: string): string[] {
  return ['--name', m.name, '--network', network, '--network-alias', m.alias, '--network-alias', m.group];
}

/** Name → addresses, every name the bench asks: NAME, ALIAS, NAME.NETWORK (each one address), GROUP (GROUP_SIZE). */
export function nameTable(records: readonly Record[], network: string): Map<string, string[]> {
  const t = new Map<string, string[]>();
  const add = (name: string, ip: string) => t.set(name, [...(t.get(name) ?? []), ip]);
  for (const r of records) {
    add(r.name, r.ip);
    add(r.alias, r.ip);
    add(`${r.name}.${network}`, r.ip);
    add(r.group, r.ip);
  }
  return t;
}

/**
 * dnsperf's input: every name of {@link nameTable} once as an A query, interleaved (name, alias, NAME.NETWORK per
 * container, a group after each group's members) so consecutive queries differ.
 */
export function queryLines(records: readonly Record[], network: string): string[] {
  const out: string[] = [];
  records.forEach((r, i) => {
    out.push(`${r.name} A`, `${r.alias} A`, `${r.name}.${network} A`);
    if ((i + 1) % GROUP_SIZE === 0 || i === records.length - 1) out.push(`${r.group} A`);
  });
  return out;
}

/** A hosts file (`--addn-hosts`) with the same names: one line per address, every name of it. */
export function hostsFile(records: readonly Record[], network: string): string {
  return records.map((r) => `${r.ip} ${r.name} ${r.alias} ${r.name}.${network} ${r.group}\n`).join('');
}
