import { tsnetError } from '../errors';

/**
 * A set of allocated offsets inside one pool, kept as sorted, disjoint, non-adjacent closed intervals
 * (`starts[i]..ends[i]`). Every operation costs O(log runs) to locate plus O(runs) at worst to splice, where runs
 * is the number of intervals: it never depends on the size of the pool, so an empty /8 or /64 costs nothing.
 */
export class AddrSet {
  private readonly starts: bigint[] = [];
  private readonly ends: bigint[] = [];
  private total = 0n;

  /** Marks `offset` allocated; throws TSN_ADDRESS_IN_USE when it already is. */
  add(offset: bigint): void {
    const i = this.floorIndex(offset);
    if (i >= 0 && this.ends[i] >= offset) {
      throw tsnetError('TSN_ADDRESS_IN_USE', `offset ${offset} is already allocated`);
    }
    const joinsLeft = i >= 0 && this.ends[i] === offset - 1n;
    const joinsRight = i + 1 < this.starts.length && this.starts[i + 1] === offset + 1n;
    if (joinsLeft && joinsRight) {
      this.ends[i] = this.ends[i + 1];
      this.starts.splice(i + 1, 1);
      this.ends.splice(i + 1, 1);
    } else if (joinsLeft) {
      this.ends[i] = offset;
    } else if (joinsRight) {
      this.starts[i + 1] = offset;
    } else {
      this.starts.splice(i + 1, 0, offset);
      this.ends.splice(i + 1, 0, offset);
    }
    this.total += 1n;
  }

  /** Frees `offset`; returns false (and changes nothing) when it was not allocated. */
  remove(offset: bigint): boolean {
    const i = this.floorIndex(offset);
    if (i < 0 || this.ends[i] < offset) return false;
    const start = this.starts[i];
    const end = this.ends[i];
    if (start === end) {
      this.starts.splice(i, 1);
      this.ends.splice(i, 1);
    } else if (offset === start) {
      this.starts[i] = offset + 1n;
    } else if (offset === end) {
      this.ends[i] = offset - 1n;
    } else {
      this.ends[i] = offset - 1n;
      this.starts.splice(i + 1, 0, offset + 1n);
      this.ends.splice(i + 1, 0, end);
    }
    this.total -= 1n;
    return true;
  }

  /** Whether `offset` is allocated. */
  has(offset: bigint): boolean {
    const i = this.floorIndex(offset);
    return i >= 0 && this.ends[i] >= offset;
  }

  /**
   * The lowest free offset in `[from, hi]`, else the lowest in `[lo, from)` (wrap-around for serial allocation), else
   * undefined. `from` defaults to `lo`; a `from` outside `[lo, hi]` means `lo`.
   */
  firstFree(lo: bigint, hi: bigint, from: bigint = lo): bigint | undefined {
    if (lo > hi) return undefined;
    const start = from < lo || from > hi ? lo : from;
    return this.lowestFreeIn(start, hi) ?? (start > lo ? this.lowestFreeIn(lo, start - 1n) : undefined);
  }

  /** Number of allocated offsets. */
  count(): bigint {
    return this.total;
  }

  /** Number of intervals, i.e. how fragmented the set is (what the cost of operations grows with). */
  runs(): number {
    return this.starts.length;
  }

  /** Every allocated offset in ascending order (as many as were added, so bounded by the allocations). */
  *offsets(): Generator<bigint> {
    for (let i = 0; i < this.starts.length; i++) {
      for (let o = this.starts[i]; o <= this.ends[i]; o++) yield o;
    }
  }

  private lowestFreeIn(a: bigint, b: bigint): bigint | undefined {
    const i = this.floorIndex(a);
    // Intervals are merged, so the offset right after a covering interval is always free.
    const candidate = i >= 0 && this.ends[i] >= a ? this.ends[i] + 1n : a;
    return candidate <= b ? candidate : undefined;
  }

  /** Index of the last interval starting at or before `offset`, or -1. */
  private floorIndex(offset: bigint): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid] <= offset) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found;
  }
}
