/** Reading Prometheus' text exposition in tests, independently of prom-client's own parser (it has none). */

/** A sample's key: its name and its labels sorted by name (the order they are printed in does not matter). */
function key(name: string, labels: Record<string, string>): string {
  return `${name}${JSON.stringify(Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)))}`;
}

/** Every sample line, by {@link key} → value. */
export function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    const head = line.slice(0, sp);
    const brace = head.indexOf('{');
    const name = brace < 0 ? head : head.slice(0, brace);
    const labels = Object.fromEntries([...head.slice(name.length).matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    out.set(key(name, labels), Number(line.slice(sp + 1)));
  }
  return out;
}

/** The value of `name` with exactly these labels, 0 when absent. */
export function value(text: string, name: string, labels: Record<string, string> = {}): number {
  return samples(text).get(key(name, labels)) ?? 0;
}

/** Metric family names: `# TYPE` lines, and every sample name (histograms' _bucket/_sum/_count). */
export function metricNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) /.exec(line);
    if (type) names.add(type[1]);
    else if (line !== '' && !line.startsWith('#')) names.add(line.split(/[{ ]/)[0]);
  }
  return names;
}
