import { AddrSet } from '../../src/ipam/addrset';
import { TsnetError } from '../../src/errors';

function setOf(...offsets: number[]): AddrSet {
  const s = new AddrSet();
  for (const o of offsets) s.add(BigInt(o));
  return s;
}

describe('AddrSet', () => {
  test('add merges neighbours into one run and counts offsets', () => {
    const s = setOf(5, 7);
    expect(s.runs()).toBe(2);
    s.add(6n);
    expect(s.runs()).toBe(1);
    expect(s.count()).toBe(3n);
    expect([...s.offsets()]).toEqual([5n, 6n, 7n]);
  });

  test('add of a taken offset throws TSN_ADDRESS_IN_USE and changes nothing', () => {
    const s = setOf(1, 2, 3);
    expect(() => s.add(2n)).toThrow(expect.objectContaining({ code: 'TSN_ADDRESS_IN_USE' }));
    expect(() => s.add(2n)).toThrow(TsnetError);
    expect(s.count()).toBe(3n);
    expect(s.runs()).toBe(1);
  });

  test('remove splits a run, trims its ends and drops singletons', () => {
    const s = setOf(1, 2, 3, 4, 5);
    expect(s.remove(3n)).toBe(true);
    expect(s.runs()).toBe(2);
    expect(s.remove(1n)).toBe(true);
    expect(s.remove(5n)).toBe(true);
    expect([...s.offsets()]).toEqual([2n, 4n]);
    expect(s.remove(2n)).toBe(true);
    expect(s.runs()).toBe(1);
    expect(s.remove(2n)).toBe(false);
    expect(s.remove(99n)).toBe(false);
    expect(s.count()).toBe(1n);
  });

  test('has', () => {
    const s = setOf(10, 11, 20);
    expect([9n, 10n, 11n, 12n, 19n, 20n, 21n].map((o) => s.has(o))).toEqual([
      false,
      true,
      true,
      false,
      false,
      true,
      false,
    ]);
  });

  test('firstFree returns the lowest free offset in range', () => {
    const s = setOf(1, 2, 3, 5);
    expect(s.firstFree(1n, 10n)).toBe(4n);
    expect(s.firstFree(0n, 10n)).toBe(0n);
    expect(s.firstFree(5n, 10n)).toBe(6n);
    expect(s.firstFree(1n, 3n)).toBeUndefined();
    expect(s.firstFree(4n, 3n)).toBeUndefined();
  });

  test('firstFree starts at `from` and wraps around to lo', () => {
    const s = setOf(1, 2, 8, 9, 10);
    expect(s.firstFree(1n, 10n, 8n)).toBe(3n);
    expect(s.firstFree(1n, 10n, 5n)).toBe(5n);
    expect(s.firstFree(1n, 10n, 11n)).toBe(3n); // from beyond hi means lo
    expect(s.firstFree(1n, 10n, 0n)).toBe(3n);
    const full = setOf(1, 2, 3);
    expect(full.firstFree(1n, 3n, 2n)).toBeUndefined();
  });

  test('offsets near 2^64 and 2^80 work without enumerating the range', () => {
    const s = new AddrSet();
    const top = (1n << 64n) - 1n;
    s.add(top);
    s.add(1n);
    expect(s.firstFree(1n, top)).toBe(2n);
    expect(s.firstFree(1n, top, top)).toBe(2n);
    expect(s.firstFree(top - 1n, top)).toBe(top - 1n);
    const huge = 1n << 80n;
    s.add(huge);
    expect(s.firstFree(huge, huge + 5n)).toBe(huge + 1n);
    expect(s.count()).toBe(3n);
  });

  test('a fragmented set of 20000 runs stays fast', () => {
    const s = new AddrSet();
    const start = performance.now();
    for (let i = 0; i < 20000; i++) s.add(BigInt(i * 2)); // every other offset: 20000 runs
    expect(s.runs()).toBe(20000);
    let wrong = 0;
    for (let i = 0; i < 20000; i++) if (s.firstFree(0n, 1n << 64n, BigInt(i * 2)) !== BigInt(i * 2 + 1)) wrong++;
    expect(wrong).toBe(0);
    s.remove(20000n);
    expect(s.firstFree(0n, 1n << 64n, 20000n)).toBe(20000n);
    expect(s.runs()).toBe(19999);
    expect(performance.now() - start).toBeLessThan(2000);
  });

  test('matches a naive model under random add/remove/firstFree', () => {
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const s = new AddrSet();
    const model = new Set<number>();
    const size = 64;
    const naiveFirstFree = (lo: number, hi: number, from: number): number | undefined => {
      const start = from < lo || from > hi ? lo : from;
      for (let o = start; o <= hi; o++) if (!model.has(o)) return o;
      for (let o = lo; o < start; o++) if (!model.has(o)) return o;
      return undefined;
    };
    for (let step = 0; step < 5000; step++) {
      const o = rand(size);
      if (rand(2) === 0) {
        if (model.has(o)) expect(() => s.add(BigInt(o))).toThrow();
        else s.add(BigInt(o));
        model.add(o);
      } else {
        expect(s.remove(BigInt(o))).toBe(model.delete(o));
      }
      const lo = rand(size);
      const hi = lo + rand(size - lo);
      const from = rand(size + 2);
      const got = s.firstFree(BigInt(lo), BigInt(hi), BigInt(from));
      const want = naiveFirstFree(lo, hi, from);
      expect(got).toBe(want === undefined ? undefined : BigInt(want));
      expect(s.count()).toBe(BigInt(model.size));
    }
    expect([...s.offsets()]).toEqual([...model].sort((a, b) => a - b).map(BigInt));
  });
});
