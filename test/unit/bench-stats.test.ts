import { linearFit } from '../../bench/lib/stats';

describe('linearFit (the soak slopes)', () => {
  test('a line is recovered exactly', () => {
    const fit = linearFit([1, 2, 3, 4], [10, 12, 14, 16]);
    expect(fit.slope).toBeCloseTo(2);
    expect(fit.intercept).toBeCloseTo(8);
    expect(fit.r2).toBeCloseTo(1);
  });

  test('flat data has slope 0; noise around a trend keeps its sign', () => {
    expect(linearFit([1, 2, 3], [5, 5, 5])).toEqual({ slope: 0, intercept: 5, r2: 1 });
    const fit = linearFit([1, 2, 3, 4, 5], [100, 98, 103, 101, 104]);
    expect(fit.slope).toBeCloseTo(1.1);
    expect(fit.r2).toBeGreaterThan(0);
    expect(fit.r2).toBeLessThan(1);
  });

  test('fewer than two points, or one x, give NaN slopes', () => {
    expect(linearFit([1], [3]).slope).toBeNaN();
    expect(linearFit([2, 2], [1, 3]).slope).toBeNaN();
  });
});
