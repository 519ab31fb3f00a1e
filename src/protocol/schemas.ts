import { z } from 'zod';
import { type Cidr, type IfAddr, isIPv4Mapped, onSubnet, specialUseOverlap, tryParseCidr, tryParseIfAddr } from '../netaddr';

/**
 * Wire shapes of the remote API (remote-api.md §3, §4), one zod schema per request. Unknown fields are dropped
 * (newer engines add some); known fields are type-checked. `null` is accepted where Go marshals nil maps/slices.
 */

/** dockerd ids are 64 hex chars; swarm-allocated network ids are 25 base-36 chars. */
const Id = z.string().regex(/^[A-Za-z0-9]{1,64}$/, 'expected a network/endpoint id (letters and digits)');
/**
 * Every string a caller sends is bounded here, so neither the driver nor an error reply or log line ever carries an
 * unbounded value: names, addresses and CIDRs are short; option values and paths get PATH_MAX.
 */
const MAX_TEXT = 256;
const MAX_VALUE = 4096;
const Text = z.string().max(MAX_TEXT);
const Value = z.string().max(MAX_VALUE);
const StringMap = z.record(Text, Value);
const AnyMap = z.record(Text, z.unknown());
const nullable = <T extends z.ZodType>(t: T) => t.nullish();

type Parsed<T> = { value: T } | { problem: string };

/** Runs `parse`; a problem becomes an issue on the field, so the error names the field and its value. */
function parseField<T>(parse: (text: string) => Parsed<T>, text: string, ctx: z.RefinementCtx): T {
  const r = parse(text);
  if ('value' in r) return r.value;
  ctx.issues.push({ code: 'custom', message: r.problem, input: text });
  return z.NEVER;
}

const parsedString = <T>(parse: (text: string) => Parsed<T>) => Text.transform((text, ctx) => parseField(parse, text, ctx));

/** Optional, and `''` (Go's zero value) is the same as absent. */
const optionalParsed = <T>(parse: (text: string) => Parsed<T>) =>
  Text.optional().transform((text, ctx) => (text === undefined || text === '' ? undefined : parseField(parse, text, ctx)));

const family = (v6: boolean) => `IPv${v6 ? 6 : 4}`;

/** A subnet of one family that no special-use range overlaps (see specialUseOverlap); canonical, host bits cleared. */
const subnetOf =
  (v6: boolean) =>
  (text: string): Parsed<Cidr> => {
    const c = tryParseCidr(text);
    if (!c) return { problem: 'not a CIDR (address/prefix-length)' };
    if (c.v6 !== v6) return { problem: `an ${family(c.v6)} prefix, expected ${family(v6)}` };
    const special = specialUseOverlap(c);
    return special ? { problem: special } : { value: c };
  };

/** An interface address of one family, `address/prefix-length`, written as that family (no IPv4-mapped IPv6). */
const ifAddrOf =
  (v6: boolean) =>
  (text: string): Parsed<IfAddr> => {
    const a = tryParseIfAddr(text);
    if (!a) return { problem: `not an address with prefix length (like ${v6 ? 'fd00::2/64' : '172.28.0.2/16'})` };
    if (isIPv4Mapped(a.ip)) return { problem: `an IPv4-mapped IPv6 address, expected ${family(v6)}${v6 ? '' : ' as a dotted quad'}` };
    if (a.ip.v6 !== v6) return { problem: `an ${family(a.ip.v6)} address, expected ${family(v6)}` };
    return { value: a };
  };

/**
 * One entry of IPv4Data/IPv6Data, parsed and related to its pool: the gateway and every aux address must be
 * addresses of the pool with the pool's prefix length (what goes on the bridge is exactly that). Output is canonical
 * text, so the driver never sees anything else.
 */
const IpamDataOf = (v6: boolean) =>
  z
    .object({
      AddressSpace: Text.default(''),
      Pool: parsedString(subnetOf(v6)),
      Gateway: optionalParsed(ifAddrOf(v6)),
      AuxAddresses: nullable(z.record(Text, parsedString(ifAddrOf(v6)))),
    })
    .superRefine((d, ctx) => {
      const onPool = (path: Array<string | number>, a: IfAddr | undefined) => {
        if (a && !onSubnet(d.Pool, a)) {
          ctx.addIssue({ code: 'custom', path, message: `not an address of pool ${d.Pool.text} with its prefix length /${d.Pool.prefix}` });
        }
      };
      onPool(['Gateway'], d.Gateway);
      for (const [name, a] of Object.entries(d.AuxAddresses ?? {})) onPool(['AuxAddresses', name], a);
    })
    .transform((d) => ({
      AddressSpace: d.AddressSpace,
      Pool: d.Pool.text,
      ...(d.Gateway ? { Gateway: d.Gateway.text } : {}),
      AuxAddresses: Object.fromEntries(Object.entries(d.AuxAddresses ?? {}).map(([name, a]) => [name, a.text])),
    }));

/** One parsed IPv4Data/IPv6Data entry. */
export type IpamDataOutput = z.output<ReturnType<typeof IpamDataOf>>;

export const CreateNetworkSchema = z.object({
  NetworkID: Id,
  Options: nullable(
    z.looseObject({
      'com.docker.network.generic': nullable(StringMap),
      'com.docker.network.enable_ipv6': z.boolean().optional(),
      'com.docker.network.internal': z.boolean().optional(),
    }),
  ),
  IPv4Data: nullable(z.array(IpamDataOf(false))),
  IPv6Data: nullable(z.array(IpamDataOf(true))),
});

export const NetworkIdSchema = z.object({ NetworkID: Id });
export const EndpointIdSchema = z.object({ NetworkID: Id, EndpointID: Id });

export const CreateEndpointSchema = z.object({
  NetworkID: Id,
  EndpointID: Id,
  Interface: nullable(
    z.object({
      Address: optionalParsed(ifAddrOf(false)).transform((a) => a?.text),
      AddressIPv6: optionalParsed(ifAddrOf(true)).transform((a) => a?.text),
      MacAddress: Text.optional(),
    }),
  ),
  Options: nullable(AnyMap),
});

export const JoinSchema = z.object({
  NetworkID: Id,
  EndpointID: Id,
  SandboxKey: Value.min(1),
  Options: nullable(AnyMap),
});

const PROTOCOLS = { 6: 'tcp', 17: 'udp', 132: 'sctp' } as const;
const Port = (min: number) => z.number().int().min(min).max(65535);

/** One entry of com.docker.network.portmap (Go's types.PortBinding). */
export const PortBindingSchema = z
  .object({
    Proto: z.union([z.literal(6), z.literal(17), z.literal(132)], { error: 'expected an IP protocol number: 6 (tcp), 17 (udp) or 132 (sctp)' }),
    IP: Text.optional(),
    Port: Port(1),
    HostIP: Text.optional(),
    HostPort: Port(0).default(0),
    HostPortEnd: Port(0).default(0),
  })
  .refine((b) => b.HostPortEnd === 0 || b.HostPortEnd >= b.HostPort, { error: 'HostPortEnd is below HostPort', path: ['HostPortEnd'] })
  .transform((b) => ({ proto: PROTOCOLS[b.Proto], port: b.Port, hostIp: b.HostIP ?? '', hostPort: b.HostPort, hostPortEnd: b.HostPortEnd }));

export const ProgramExternalConnectivitySchema = z.object({
  NetworkID: Id,
  EndpointID: Id,
  Options: nullable(z.looseObject({ 'com.docker.network.portmap': nullable(z.array(PortBindingSchema)) })),
});

export const DiscoverySchema = z.object({
  DiscoveryType: z.number().int(),
  DiscoveryData: z.unknown(),
});

export const RequestPoolSchema = z.object({
  AddressSpace: Text.default(''),
  Pool: Text.default(''),
  SubPool: Text.default(''),
  Options: nullable(StringMap),
  V6: z.boolean().default(false),
});

export const PoolIdSchema = z.object({ PoolID: Text.min(1) });

export const RequestAddressSchema = z.object({
  PoolID: Text.min(1),
  Address: Text.default(''),
  Options: nullable(StringMap),
});

export const ReleaseAddressSchema = z.object({
  PoolID: Text.min(1),
  Address: Text.min(1),
});

export const EmptySchema = z.object({});
