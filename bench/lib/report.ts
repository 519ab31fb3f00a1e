/** Markdown and text tables of the results. */
import type { Breakdown } from './tsnet-log';
import type { Stats } from './stats';

export const f = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(x >= 100 ? 0 : x >= 10 ? 1 : 2));
export const ok = (v: number, target: number) => (Number.isFinite(v) ? (v <= target ? 'yes' : '**no**') : '—');
export const okMin = (v: number, target: number) => (Number.isFinite(v) ? (v >= target ? 'yes' : '**no**') : '—');
export const pct = (x: number) => (Number.isFinite(x) ? `${(x * 100).toFixed(0)} %` : '—');

export function mdTable(rows: string[][]): string {
  const [head, ...body] = rows;
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...body.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

export function textTable(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ')).join('\n');
}

export function statsRows(title: string, groups: Record<string, Stats>): string[][] {
  return [
    [title, 'n', 'median ms', 'p95 ms', 'max ms'],
    ...Object.entries(groups).map(([k, s]) => [`\`${k}\``, String(s.n), f(s.median), f(s.p95), f(s.max)]),
  ];
}

export function callRows(b: Breakdown): string[][] {
  return [
    ['plugin call', 'n', 'median ms', 'p95 ms', 'median exec ms', 'median store ms', 'median other ms'],
    ...Object.entries(b.calls).map(([k, c]) => [
      `\`${k}\``,
      String(c.total.n),
      f(c.total.median),
      f(c.total.p95),
      f(c.exec.median),
      f(c.store.median),
      f(c.other.median),
    ]),
  ];
}
