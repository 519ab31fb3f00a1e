import { z } from 'zod';

/**
 * Wire shapes of the remote API (remote-api.md §3, §4), one zod schema per request. Unknown fields are dropped
 * (newer engines add some); known fields are type-checked. `null` is accepted where Go marshals nil maps/slices.
 */

/** dockerd ids are 64 hex chars; swarm-allocated network ids are 25 base-36 chars. */
const Id = z.string().regex(/^[A-Za-z0-9]{1,64}$/, 'expected a network/endpoint id (letters and digits)');
const StringMap = z.record(z.string(), z.string());
const AnyMap = z.record(z.string(), z.unknown());
const nullable = <T extends z.ZodType>(t: T) => t.nullish();

export const IpamDataSchema = z.object({
  AddressSpace: z.string().default(''),
  Pool: z.string().min(1),
  Gateway: z.string().optional(),
  AuxAddresses: nullable(StringMap),
});

export const CreateNetworkSchema = z.object({
  NetworkID: Id,
  Options: nullable(
    z.looseObject({
      'com.docker.network.generic': nullable(StringMap),
      'com.docker.network.enable_ipv6': z.boolean().optional(),
      'com.docker.network.internal': z.boolean().optional(),
    }),
  ),
  IPv4Data: nullable(z.array(IpamDataSchema)),
  IPv6Data: nullable(z.array(IpamDataSchema)),
});

export const NetworkIdSchema = z.object({ NetworkID: Id });
export const EndpointIdSchema = z.object({ NetworkID: Id, EndpointID: Id });

export const CreateEndpointSchema = z.object({
  NetworkID: Id,
  EndpointID: Id,
  Interface: nullable(
    z.object({
      Address: z.string().optional(),
      AddressIPv6: z.string().optional(),
      MacAddress: z.string().optional(),
    }),
  ),
  Options: nullable(AnyMap),
});

export const JoinSchema = z.object({
  NetworkID: Id,
  EndpointID: Id,
  SandboxKey: z.string().min(1),
  Options: nullable(AnyMap),
});

const PROTOCOLS = { 6: 'tcp', 17: 'udp', 132: 'sctp' } as const;
const Port = (min: number) => z.number().int().min(min).max(65535);

/** One entry of com.docker.network.portmap (Go's types.PortBinding). */
export const PortBindingSchema = z
  .object({
    Proto: z.union([z.literal(6), z.literal(17), z.literal(132)], { message: 'expected an IP protocol number: 6 (tcp), 17 (udp) or 132 (sctp)' }),
    IP: z.string().optional(),
    Port: Port(1),
    HostIP: z.string().optional(),
    HostPort: Port(0).default(0),
    HostPortEnd: Port(0).default(0),
  })
  .refine((b) => b.HostPortEnd === 0 || b.HostPortEnd >= b.HostPort, { message: 'HostPortEnd is below HostPort', path: ['HostPortEnd'] })
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
  AddressSpace: z.string().default(''),
  Pool: z.string().default(''),
  SubPool: z.string().default(''),
  Options: nullable(StringMap),
  V6: z.boolean().default(false),
});

export const PoolIdSchema = z.object({ PoolID: z.string().min(1) });

export const RequestAddressSchema = z.object({
  PoolID: z.string().min(1),
  Address: z.string().default(''),
  Options: nullable(StringMap),
});

export const ReleaseAddressSchema = z.object({
  PoolID: z.string().min(1),
  Address: z.string().min(1),
});

export const EmptySchema = z.object({});
