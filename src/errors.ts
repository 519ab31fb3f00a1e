/**
 * The one error catalogue. Every error tsnet reports carries a stable code; the category decides the HTTP status
 * (see {@link httpStatus}), so the protocol layer is the only place that knows about HTTP.
 *
 * Never use 404 for an error: dockerd reads 404 as "method not implemented" and, for optional calls, ignores it.
 */

import { inspect } from 'node:util';

export type ErrorCategory = 'invalid' | 'conflict' | 'unavailable' | 'not-found' | 'kernel' | 'internal';

interface CatalogueEntry {
  readonly category: ErrorCategory;
  readonly summary: string;
}

export const catalogue = {
  TSN_INVALID_REQUEST: { category: 'invalid', summary: 'request body does not match the remote API' },
  TSN_INVALID_OPTION: { category: 'invalid', summary: 'a driver or IPAM option is unknown or has a bad value' },
  TSN_INVALID_ADDRESS: { category: 'invalid', summary: 'an address or prefix is malformed or outside its pool' },
  TSN_UNKNOWN_NETWORK: { category: 'not-found', summary: 'no network with that id' },
  TSN_UNKNOWN_ENDPOINT: { category: 'not-found', summary: 'no endpoint with that id' },
  TSN_UNKNOWN_POOL: { category: 'not-found', summary: 'no pool with that id' },
  TSN_UNKNOWN_CONTAINER: { category: 'not-found', summary: 'no running container by that id or name (admin socket)' },
  TSN_NETWORK_EXISTS: { category: 'conflict', summary: 'a network with that id or bridge name exists' },
  TSN_ENDPOINT_EXISTS: { category: 'conflict', summary: 'an endpoint with that id exists' },
  TSN_ENDPOINT_JOINED: { category: 'conflict', summary: 'the endpoint is joined already and its mode makes a link per Join' },
  TSN_POOL_OVERLAP: { category: 'conflict', summary: 'the pool overlaps another pool in the address space' },
  TSN_ADDRESS_IN_USE: { category: 'conflict', summary: 'the address is already allocated' },
  TSN_PORT_IN_USE: { category: 'conflict', summary: 'a host port to publish on is taken' },
  TSN_STATE_LOCKED: { category: 'conflict', summary: 'another tsnet uses the state directory or the socket' },
  TSN_NO_AVAILABLE_IPS: { category: 'unavailable', summary: 'no free address left in the range' },
  TSN_NO_AVAILABLE_POOL: { category: 'unavailable', summary: 'no default pool is free' },
  TSN_BRIDGE_FULL: { category: 'unavailable', summary: "the network's Linux bridge holds its most ports (1,023)" },
  TSN_KERNEL: { category: 'kernel', summary: 'a kernel operation failed' },
  TSN_DOCKER: { category: 'unavailable', summary: "Docker's API is unreachable or answered something unexpected" },
  TSN_DNS: { category: 'internal', summary: 'a DNS listener or upstream failed' },
  TSN_STORE: { category: 'internal', summary: 'the state store failed' },
  TSN_UNAVAILABLE: { category: 'unavailable', summary: 'what was asked for is not served by this tsnet (admin socket)' },
  TSN_SHUTTING_DOWN: { category: 'unavailable', summary: 'tsnet is stopping and starts no new plugin call' },
  TSN_INTERNAL: { category: 'internal', summary: 'unexpected internal error' },
} as const satisfies Record<string, CatalogueEntry>;

export type ErrorCode = keyof typeof catalogue;

/** An error from the catalogue. `message` is what dockerd shows the user, so it names the field and the value. */
export class TsnetError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TsnetError';
    this.code = code;
  }

  get category(): ErrorCategory {
    return catalogue[this.code].category;
  }
}

/** Shorthand constructor used across modules. */
export function tsnetError(code: ErrorCode, message: string, cause?: unknown): TsnetError {
  return new TsnetError(code, message, cause === undefined ? undefined : { cause });
}

/** HTTP status for a category: the single place where errors meet HTTP. */
export function httpStatus(err: TsnetError): number {
  switch (err.category) {
    case 'invalid':
      return 400;
    case 'not-found':
      // 404 would tell dockerd "not implemented"; an unknown id is a bad request from its point of view.
      return 400;
    case 'conflict':
      return 409;
    case 'unavailable':
      return 503;
    case 'kernel':
    case 'internal':
      return 500;
  }
}

/** Any thrown value as a TsnetError (unknown errors become TSN_INTERNAL, keeping the original as cause). */
/** A thrown non-Error as text: strings as they are, anything else inspected (bounded), never "[object Object]". */
function describeThrown(x: unknown): string {
  return typeof x === 'string' ? x : inspect(x, { depth: 2, breakLength: Infinity, maxArrayLength: 10, maxStringLength: 200 });
}

export function asTsnetError(err: unknown): TsnetError {
  if (err instanceof TsnetError) return err;
  const msg = err instanceof Error ? err.message : describeThrown(err);
  return new TsnetError('TSN_INTERNAL', msg, { cause: err });
}

/** The errno code (`ENOENT`, ...) of a thrown value, if it has one (not `instanceof Error`: Node's may come from another realm). */
export function errnoCode(err: unknown): string | undefined {
  const code: unknown = typeof err === 'object' && err !== null ? Reflect.get(err, 'code') : undefined;
  return typeof code === 'string' ? code : undefined;
}

/** The message with its cause chain, for the `{"Err"}` reply and logs: "outer: inner: innermost". */
export function describeChain(err: unknown): string {
  const parts: string[] = [];
  let cur: unknown = err;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 8; depth++) {
    const msg = cur instanceof Error ? cur.message : describeThrown(cur);
    if (msg && !parts.some((p) => p.includes(msg))) parts.push(msg);
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return parts.join(': ');
}

/** {@link describeChain} cut to `max` characters, for log lines whose errors carry text from outside (Docker's replies). */
export function describeBriefly(err: unknown, max = 300): string {
  return describeChain(err).slice(0, max);
}

/**
 * The default branch of a switch that covers every member of a union: the call compiles only while `x` is `never`,
 * so a new member (a kernel change, a mode) cannot be added without its case. Reaching it at run time means a
 * value came from outside the types (a corrupt record).
 */
export function assertNever(x: never, what: string): never {
  throw tsnetError('TSN_INTERNAL', `unexpected ${what}: ${describeThrown(x).slice(0, 80)}`);
}
