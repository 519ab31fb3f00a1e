import type { FwFamily, Kernel, KernelChange } from '../kernel/contract';
import { log } from '../log';
import { put, type Store } from '../store/contract';
import type { Step } from './steps';

/** The host-wide forwarding switch of each family. */
export const FORWARDING_SYSCTL: Record<FwFamily, string> = {
  ipv4: 'net/ipv4/ip_forward',
  ipv6: 'net/ipv6/conf/all/forwarding',
};
const FAMILIES: readonly FwFamily[] = ['ipv4', 'ipv6'];

function familyOf(c: KernelChange): FwFamily | undefined {
  if (c.op !== 'sysctl.set' || c.value !== '1') return undefined;
  return FAMILIES.find((f) => FORWARDING_SYSCTL[f] === c.key);
}

/**
 * Whether tsnet is the one that turned forwarding on. dockerd, when *it* enables forwarding, sets the FORWARD policy
 * to DROP; when tsnet did (at create, or at boot before dockerd) dockerd leaves it open, and the host would route
 * between all its interfaces. So where forwarding was off, tsnet records that it turned it on (the record survives
 * restarts, when forwarding already reads 1) and its firewall guards the family from then on, even with no network
 * left: tsnet never switches forwarding off again, since a dockerd started later may rely on it.
 */
export class ForwardingOwner {
  private constructor(
    private readonly store: Store,
    private readonly kernel: Kernel,
    private readonly claimed: Set<FwFamily>,
  ) {}

  static async load(store: Store, kernel: Kernel): Promise<ForwardingOwner> {
    const keys = new Set((await store.all('host')).map((r) => r.key));
    const families = FAMILIES.filter((f) => keys.has(FORWARDING_SYSCTL[f]));
    return new ForwardingOwner(store, kernel, new Set(families));
  }

  /** tsnet turned forwarding on for some family: its table must stay (with the guard) after the last network. */
  get guarded(): boolean {
    return this.claimed.size > 0;
  }

  /** The families whose forwarding tsnet turned on: the firewall guards them. */
  get families(): FwFamily[] {
    return [...this.claimed];
  }

  /**
   * Before `steps` run: for each forwarding sysctl they switch on that is off now, records that tsnet turns it on
   * and puts the guard in place first, so there is no moment of open forwarding.
   */
  async claim(steps: Step[]): Promise<void> {
    const families = new Set(steps.flatMap((s) => ('changes' in s ? s.changes : [])).flatMap((c) => familyOf(c) ?? []));
    for (const family of families) {
      if (this.claimed.has(family)) continue;
      const key = FORWARDING_SYSCTL[family];
      const before = await this.kernel.readSysctl(key);
      if (before !== '0') continue;
      await this.store.commit([put('host', key, { key, before, changedAt: new Date().toISOString() })]);
      this.claimed.add(family);
      log.info('tsnet turns on forwarding; forwarding that involves no tsnet or Docker bridge is dropped', { sysctl: key });
      await this.kernel.firewall.setForwardGuard(family);
    }
  }
}
