import type { z } from 'zod';
import type { NetworkDriver } from '../driver/contract';
import type { Ipam } from '../ipam/contract';
import type { LogContext } from '../log';
import { HANDSHAKE } from './early';
import * as S from './schemas';

/** What the routes need once state is loaded. */
export interface Backend {
  driver: NetworkDriver;
  ipam: Ipam;
}

interface RouteBase<T extends z.ZodType> {
  schema: T;
  ids?: (req: z.output<T>) => LogContext;
}

/** The handshake and discovery calls: answered at once, before tsnet has loaded anything. */
interface HandshakeRoute<T extends z.ZodType> extends RouteBase<T> {
  wait: 'nothing';
  handle: (req: z.output<T>) => unknown;
}

/**
 * The rest: answered once the state is loaded (capability calls, which dockerd makes while tsnet may still be
 * reconciling) or, the default, once the kernel is reconciled with it too.
 */
interface BackendRoute<T extends z.ZodType> extends RouteBase<T> {
  wait?: 'state' | 'reconciled';
  handle: (req: z.output<T>, backend: Backend) => unknown;
}

/** One remote API method: its request schema, what it waits for, the ids it concerns (for logs) and its handler. */
export type Route<T extends z.ZodType = z.ZodType> = HandshakeRoute<T> | BackendRoute<T>;

function route<T extends z.ZodType>(r: Route<T>): Route {
  return r;
}

const epIds = (r: { NetworkID: string; EndpointID: string }): LogContext => ({ networkId: r.NetworkID, endpointId: r.EndpointID });
const EMPTY = {};

/** A call that names an endpoint and answers `{}`. */
function endpointCall(fn: (d: NetworkDriver, networkId: string, endpointId: string) => Promise<void>): Route {
  return route({
    schema: S.EndpointIdSchema,
    ids: epIds,
    handle: async (r, b) => {
      await fn(b.driver, r.NetworkID, r.EndpointID);
      return EMPTY;
    },
  });
}

/**
 * The method table: the only place that knows the remote API's method names. Methods not listed get 404, which
 * dockerd reads as "not implemented" (remote-api.md §3.12): AllocateNetwork/FreeNetwork (global scope only) and
 * GwAllocCheck (not advertised).
 */
export function routes(): Record<string, Route> {
  return {
    'Plugin.Activate': route({ schema: S.EmptySchema, wait: 'nothing', handle: () => HANDSHAKE }),

    'NetworkDriver.GetCapabilities': route({
      schema: S.EmptySchema,
      wait: 'state',
      handle: (_r, b) => {
        const c = b.driver.capabilities();
        return { Scope: c.scope, ConnectivityScope: c.connectivityScope, GwAllocChecker: false };
      },
    }),
    'NetworkDriver.CreateNetwork': route({
      schema: S.CreateNetworkSchema,
      ids: (r) => ({ networkId: r.NetworkID }),
      handle: async (r, b) => {
        const o = r.Options ?? {};
        const data = (d: S.IpamDataOutput) => ({
          addressSpace: d.AddressSpace,
          pool: d.Pool,
          ...(d.Gateway ? { gateway: d.Gateway } : {}),
          auxAddresses: d.AuxAddresses,
        });
        await b.driver.createNetwork({
          networkId: r.NetworkID,
          driverOptions: o['com.docker.network.generic'] ?? {},
          enableIPv6: o['com.docker.network.enable_ipv6'] ?? false,
          internal: o['com.docker.network.internal'] ?? false,
          ipv4: (r.IPv4Data ?? []).map(data),
          ipv6: (r.IPv6Data ?? []).map(data),
        });
        return EMPTY;
      },
    }),
    'NetworkDriver.DeleteNetwork': route({
      schema: S.NetworkIdSchema,
      ids: (r) => ({ networkId: r.NetworkID }),
      handle: async (r, b) => {
        await b.driver.deleteNetwork(r.NetworkID);
        return EMPTY;
      },
    }),
    'NetworkDriver.CreateEndpoint': route({
      schema: S.CreateEndpointSchema,
      ids: epIds,
      handle: async (r, b) => {
        const i = r.Interface;
        const reply = await b.driver.createEndpoint({
          networkId: r.NetworkID,
          endpointId: r.EndpointID,
          iface: {
            ...(i?.Address ? { address: i.Address } : {}),
            ...(i?.AddressIPv6 ? { addressIPv6: i.AddressIPv6 } : {}),
            ...(i?.MacAddress ? { macAddress: i.MacAddress } : {}),
          },
          options: r.Options ?? {},
        });
        const out = {
          ...(reply.address ? { Address: reply.address } : {}),
          ...(reply.addressIPv6 ? { AddressIPv6: reply.addressIPv6 } : {}),
          ...(reply.macAddress ? { MacAddress: reply.macAddress } : {}),
        };
        return Object.keys(out).length > 0 ? { Interface: out } : EMPTY;
      },
    }),
    'NetworkDriver.DeleteEndpoint': endpointCall((d, n, e) => d.deleteEndpoint(n, e)),
    'NetworkDriver.EndpointOperInfo': route({
      schema: S.EndpointIdSchema,
      ids: epIds,
      handle: async (r, b) => ({ Value: await b.driver.endpointOperInfo(r.NetworkID, r.EndpointID) }),
    }),
    'NetworkDriver.Join': route({
      schema: S.JoinSchema,
      ids: epIds,
      handle: async (r, b) => {
        const j = await b.driver.join({ networkId: r.NetworkID, endpointId: r.EndpointID, sandboxKey: r.SandboxKey, options: r.Options ?? {} });
        return {
          InterfaceName: { SrcName: j.srcName, DstPrefix: j.dstPrefix },
          ...(j.gateway ? { Gateway: j.gateway } : {}),
          ...(j.gatewayIPv6 ? { GatewayIPv6: j.gatewayIPv6 } : {}),
          StaticRoutes: j.staticRoutes.map((s) => ({ Destination: s.destination, RouteType: s.routeType, ...(s.nextHop ? { NextHop: s.nextHop } : {}) })),
          DisableGatewayService: j.disableGatewayService,
        };
      },
    }),
    'NetworkDriver.Leave': endpointCall((d, n, e) => d.leave(n, e)),
    'NetworkDriver.ProgramExternalConnectivity': route({
      schema: S.ProgramExternalConnectivitySchema,
      ids: epIds,
      handle: async (r, b) => {
        const portBindings = r.Options?.['com.docker.network.portmap'] ?? [];
        await b.driver.programExternalConnectivity({ networkId: r.NetworkID, endpointId: r.EndpointID, portBindings });
        return EMPTY;
      },
    }),
    'NetworkDriver.RevokeExternalConnectivity': endpointCall((d, n, e) => d.revokeExternalConnectivity(n, e)),
    // Node discovery only matters to global-connectivity drivers; tsnet's bridge networks are host-local.
    'NetworkDriver.DiscoverNew': route({ schema: S.DiscoverySchema, wait: 'nothing', handle: () => EMPTY }),
    'NetworkDriver.DiscoverDelete': route({ schema: S.DiscoverySchema, wait: 'nothing', handle: () => EMPTY }),

    'IpamDriver.GetCapabilities': route({
      schema: S.EmptySchema,
      wait: 'state',
      handle: (_r, b) => {
        const c = b.ipam.capabilities();
        return { RequiresMACAddress: c.requiresMACAddress, RequiresRequestReplay: c.requiresRequestReplay };
      },
    }),
    'IpamDriver.GetDefaultAddressSpaces': route({
      schema: S.EmptySchema,
      wait: 'state',
      handle: (_r, b) => {
        const s = b.ipam.defaultAddressSpaces();
        return { LocalDefaultAddressSpace: s.local, GlobalDefaultAddressSpace: s.global };
      },
    }),
    'IpamDriver.RequestPool': route({
      schema: S.RequestPoolSchema,
      handle: async (r, b) => {
        const p = await b.ipam.requestPool({ addressSpace: r.AddressSpace, pool: r.Pool, subPool: r.SubPool, options: r.Options ?? {}, v6: r.V6 });
        return { PoolID: p.poolId, Pool: p.pool, Data: p.data };
      },
    }),
    'IpamDriver.ReleasePool': route({
      schema: S.PoolIdSchema,
      ids: (r) => ({ poolId: r.PoolID }),
      handle: async (r, b) => {
        await b.ipam.releasePool(r.PoolID);
        return EMPTY;
      },
    }),
    'IpamDriver.RequestAddress': route({
      schema: S.RequestAddressSchema,
      ids: (r) => ({ poolId: r.PoolID }),
      handle: async (r, b) => {
        const a = await b.ipam.requestAddress({ poolId: r.PoolID, address: r.Address, options: r.Options ?? {} });
        return { Address: a.address, Data: a.data };
      },
    }),
    'IpamDriver.ReleaseAddress': route({
      schema: S.ReleaseAddressSchema,
      ids: (r) => ({ poolId: r.PoolID }),
      handle: async (r, b) => {
        await b.ipam.releaseAddress(r.PoolID, r.Address);
        return EMPTY;
      },
    }),
  };
}
