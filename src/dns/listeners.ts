import { describeChain } from '../errors';
import { log } from '../log';
import { Mutex } from '../mutex';
import { canonicalAddress } from '../netaddr';
import type { DnsNetwork, ListenerSpec } from './contract';

/** Where tsnet's DNS listens (the listening half of DnsConfig). */
export interface ListenPlan {
  port: number;
  /** On each network's host addresses (a bridge network's gateways). */
  onGateways: boolean;
  /** Internal networks too (their queries are never forwarded). */
  onInternal: boolean;
  hostAddresses: string[];
}

/**
 * The listeners `plan` asks for on `networks`. A network's own listener wins over the same address given as a host
 * address, so a query through an internal network's gateway is never forwarded however the address was named.
 */
export function desiredListeners(plan: ListenPlan, networks: ReadonlyArray<DnsNetwork>): ListenerSpec[] {
  const specs = new Map<string, ListenerSpec>();
  if (plan.onGateways) {
    for (const n of networks) {
      if (n.internal && !plan.onInternal) continue;
      for (const address of n.hostAddresses) specs.set(address, { address, port: plan.port, networkId: n.id, noForward: n.internal });
    }
  }
  for (const address of plan.hostAddresses) {
    if (!specs.has(address)) specs.set(address, { address, port: plan.port, noForward: false });
  }
  return [...specs.values()];
}

export interface OpenListener {
  close(): Promise<void>;
}

export type ListenerOpener = (spec: ListenerSpec) => Promise<OpenListener>;

const key = (s: ListenerSpec) => `${s.address}|${s.port}`;
const sameSpec = (a: ListenerSpec, b: ListenerSpec) => a.networkId === b.networkId && a.noForward === b.noForward;

/**
 * Keeps the open listeners equal to the wanted set: networks come and go, so their gateways do. A bind that fails
 * (the address not yet on the host, the port taken by another server) is logged once and tried again every
 * `retryMs` until it works or the listener is no longer wanted; it never fails the caller.
 */
export class DnsListeners {
  private readonly open = new Map<string, { spec: ListenerSpec; listener: OpenListener }>();
  /** Specs that failed, with the error last logged for each (logged again only when it changes). */
  private readonly failing = new Map<string, string>();
  private wanted: ListenerSpec[] = [];
  private readonly lane = new Mutex();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  /** `retryMs`: how often a listener that failed to bind is tried again. */
  constructor(
    private readonly opener: ListenerOpener,
    private readonly retryMs = 2000,
  ) {}

  /** Opens what `specs` adds, closes what it drops, reopens a listener whose network or forwarding changed. */
  update(specs: ListenerSpec[]): Promise<void> {
    // The driver may report a network change while tsnet stops: nothing opens again after close().
    if (this.closed) return Promise.resolve();
    this.wanted = specs;
    return this.lane.run(() => this.sync());
  }

  /** An address and port tsnet listens on (or wants to): an upstream there would make a forwarding loop. */
  isOwn(address: string, port: number): boolean {
    // Any spelling of an address matches; a zone (`fe80::1%eth0`, a router's resolver in resolv.conf) is part of it.
    const a = canonicalAddress(address, true);
    return this.wanted.some((s) => s.port === port && canonicalAddress(s.address, true) === a);
  }

  /** The specs with a bound listener now. */
  listening(): ListenerSpec[] {
    return [...this.open.values()].map((o) => o.spec);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wanted = [];
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.lane.run(() => this.sync());
  }

  private async sync(): Promise<void> {
    const wanted = new Map(this.wanted.map((s) => [key(s), s]));
    for (const [k, o] of [...this.open]) {
      const w = wanted.get(k);
      if (w && sameSpec(w, o.spec)) continue;
      this.open.delete(k);
      await o.listener.close().catch((err: unknown) => log.warn('DNS listener did not close cleanly', { address: o.spec.address, port: o.spec.port, error: describeChain(err) }));
      log.info('DNS listener closed', { address: o.spec.address, port: o.spec.port, networkId: o.spec.networkId });
    }
    for (const k of [...this.failing.keys()]) if (!wanted.has(k)) this.failing.delete(k);
    for (const [k, spec] of wanted) {
      if (this.open.has(k)) continue;
      try {
        this.open.set(k, { spec, listener: await this.opener(spec) });
        this.failing.delete(k);
        log.info('DNS listener open', { address: spec.address, port: spec.port, networkId: spec.networkId, forwards: !spec.noForward });
      } catch (err) {
        const error = describeChain(err);
        if (this.failing.get(k) !== error) log.warn('DNS listener could not bind; retrying', { address: spec.address, port: spec.port, networkId: spec.networkId, error });
        this.failing.set(k, error);
      }
    }
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.closed || this.failing.size === 0 || this.timer !== undefined) return;
    // sync() catches every failure of its own.
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.lane.run(() => this.sync()).catch((err: unknown) => log.error('DNS listener retry failed', { error: describeChain(err) }));
    }, this.retryMs);
    this.timer.unref();
  }
}
