/** Statistics of the bench: quantiles by linear interpolation between closest ranks, ratios of medians. */

export interface Stats {
  n: number;
  median: number;
  p95: number;
  p99: number;
  min: number;
  max: number;
  mean: number;
}

/** Quantile with linear interpolation between closest ranks (R type 7, numpy's default). */
export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function r2(x: number): number {
  return Math.round(x * 100) / 100;
}

export function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  return {
    n: s.length,
    median: r2(quantile(s, 0.5)),
    p95: r2(quantile(s, 0.95)),
    p99: r2(quantile(s, 0.99)),
    min: r2(s[0] ?? NaN),
    max: r2(s[s.length - 1] ?? NaN),
    mean: r2(s.reduce((a, b) => a + b, 0) / (s.length || 1)),
  };
}

export function median(xs: number[]): number {
  return quantile(
    [...xs].sort((a, b) => a - b),
    0.5,
  );
}

export function ratio(a: number, b: number): number {
  return Math.round((a / b) * 1000) / 1000;
}

export function groupStats<T>(items: T[], key: (t: T) => string | undefined, value: (t: T) => number | undefined): Record<string, Stats> {
  const groups = new Map<string, number[]>();
  for (const it of items) {
    const k = key(it);
    const v = value(it);
    if (k === undefined || v === undefined || !Number.isFinite(v)) continue;
    groups.set(k, [...(groups.get(k) ?? []), v]);
  }
  return Object.fromEntries([...groups.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([k, vs]) => [k, stats(vs)]));
}

/** tsnet and Docker measured alike; ratio = tsnet / Docker of the medians. */
export interface Pair {
  tsnet: Stats;
  docker: Stats;
  ratio: number;
}

export function pair(t: number[], d: number[]): Pair {
  const ts = stats(t);
  const ds = stats(d);
  return { tsnet: ts, docker: ds, ratio: ratio(ts.median, ds.median) };
}

/** Least-squares line through (x, y): slope per unit of x, intercept, and r² (NaN with fewer than two points). */
export function linearFit(xs: readonly number[], ys: readonly number[]): { slope: number; intercept: number; r2: number } {
  const n = Math.min(xs.length, ys.length);
  if (n < 2) return { slope: NaN, intercept: NaN, r2: NaN };
  const mx = xs.slice(0, n).reduce((a, b) => a + b, 0) / n;
  const my = ys.slice(0, n).reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
    syy += (ys[i] - my) ** 2;
  }
  const slope = sxx === 0 ? NaN : sxy / sxx;
  return { slope, intercept: my - slope * mx, r2: syy === 0 ? 1 : (sxy * sxy) / (sxx * syy) };
}
