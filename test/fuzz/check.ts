import fc from 'fast-check';
import { z } from 'zod';
import type { PluginResponse as Reply } from '../harness/tsnet';
import type { FuzzApp } from './app';
import { bodies, METHODS } from './bodies';

/** Shapes of successful replies (remote-api.md §3, §4); anything else with status 200 is a failure. */
const Empty = z.object({}).strict();
const Str = z.string();
const REPLIES: Record<string, z.ZodType> = {
  'Plugin.Activate': z.object({ Implements: z.array(Str) }),
  'NetworkDriver.GetCapabilities': z.object({ Scope: Str, ConnectivityScope: Str }),
  'NetworkDriver.CreateNetwork': Empty,
  'NetworkDriver.DeleteNetwork': Empty,
  'NetworkDriver.CreateEndpoint': z.union([Empty, z.object({ Interface: z.object({ Address: Str.optional(), AddressIPv6: Str.optional(), MacAddress: Str.optional() }).strict() })]),
  'NetworkDriver.DeleteEndpoint': Empty,
  'NetworkDriver.EndpointOperInfo': z.object({ Value: z.record(Str, z.unknown()) }),
  'NetworkDriver.Join': z.object({ InterfaceName: z.object({ SrcName: Str.min(1), DstPrefix: Str.min(1) }), StaticRoutes: z.array(z.unknown()), DisableGatewayService: z.boolean() }),
  'NetworkDriver.Leave': Empty,
  'NetworkDriver.ProgramExternalConnectivity': Empty,
  'NetworkDriver.RevokeExternalConnectivity': Empty,
  'NetworkDriver.DiscoverNew': Empty,
  'NetworkDriver.DiscoverDelete': Empty,
  'IpamDriver.GetCapabilities': z.object({ RequiresMACAddress: z.boolean(), RequiresRequestReplay: z.boolean() }),
  'IpamDriver.GetDefaultAddressSpaces': z.object({ LocalDefaultAddressSpace: Str, GlobalDefaultAddressSpace: Str }),
  'IpamDriver.RequestPool': z.object({ PoolID: Str.min(1), Pool: Str.regex(/^[0-9a-f.:]+\/\d{1,3}$/), Data: z.record(Str, Str) }),
  'IpamDriver.ReleasePool': Empty,
  'IpamDriver.RequestAddress': z.object({ Address: Str.regex(/^[0-9a-f.:]+\/\d{1,3}$/), Data: z.record(Str, Str) }),
  'IpamDriver.ReleaseAddress': Empty,
};

export interface Failure {
  method: string;
  /** The body (capped: some are megabytes). */
  body: string;
  status: number;
  reply: string;
  problem: string;
}

/** What is wrong with a reply, or undefined: 200 with a valid shape, or an error status with a non-empty Err (quoting the field or value for 400). */
export function replyProblem(method: string, r: Reply): string | undefined {
  if (r.status === 200) {
    const ok = REPLIES[method].safeParse(r.body);
    return ok.success ? undefined : `200 with an invalid reply: ${ok.error.issues[0].message} at ${ok.error.issues[0].path.join('.')}`;
  }
  if (r.status < 400 || r.status > 599) return `unexpected status ${r.status}`;
  const err = (r.body as { Err?: unknown } | undefined)?.Err;
  if (typeof err !== 'string' || err.trim() === '') return 'error reply without a non-empty {"Err": string}';
  if (r.status === 400 && !err.includes('"')) return '400 whose Err names no quoted field or value';
  // No kernel failure is injected, so a 500 is a bug; 503 (nothing left to allocate) is a fair answer.
  if (r.status === 500) return 'internal server error';
  return undefined;
}

const cap = (s: string) => (s.length > 300 ? `${s.slice(0, 300)}... (${s.length} chars)` : s);

export interface MethodResult {
  method: string;
  bodies: number;
  accepted: number;
  /** The first 300 characters of each accepted body (what the fuzz reached). */
  acceptedBodies: string[];
  failures: Failure[];
}

/**
 * Sends `count` bodies (fixed seed) for one method to the app and checks every property: an answer always comes
 * (never a socket error), the reply is valid or a proper {"Err"}, and a rejected call leaves the store and fake
 * kernel exactly as they were.
 */
export async function fuzzMethod(app: FuzzApp, method: string, count: number, seed: number): Promise<MethodResult> {
  const texts = fc.sample(bodies(method, app.poolId), { seed, numRuns: count });
  const failures: Failure[] = [];
  const acceptedBodies: string[] = [];
  // The state before a call is the state after the previous one; it only needs recomputing after an accepted call.
  let before = await app.snapshot();
  for (const body of texts) {
    let r: Reply;
    try {
      r = await app.call(method, body);
    } catch (err) {
      failures.push({ method, body: cap(body), status: 0, reply: '', problem: `no answer: ${(err as Error).message}` });
      before = await app.snapshot();
      continue;
    }
    const problem = replyProblem(method, r);
    if (problem) failures.push({ method, body: cap(body), status: r.status, reply: cap(r.raw), problem });
    const after = await app.snapshot();
    if (r.status === 200) acceptedBodies.push(body.slice(0, 300));
    else if (after !== before) failures.push({ method, body: cap(body), status: r.status, reply: cap(r.raw), problem: 'a rejected call changed the store or the kernel' });
    before = after;
  }
  return { method, bodies: texts.length, accepted: acceptedBodies.length, acceptedBodies, failures };
}

/** Every method, each against a freshly seeded app so one method's valid calls do not starve another's. */
export async function fuzzAll(start: () => Promise<FuzzApp>, perMethod: number, seed: number): Promise<MethodResult[]> {
  const results: MethodResult[] = [];
  for (const [i, method] of METHODS.entries()) {
    const app = await start();
    try {
      results.push(await fuzzMethod(app, method, perMethod, seed + i));
    } finally {
      await app.stop();
    }
  }
  return results;
}
