import fs from 'node:fs';
import type { Server } from 'node:http';
import path from 'node:path';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { ContainerEndpoints } from '../docker/contract';
import type { TsnetDriver } from '../driver/driver';
import { asTsnetError, describeBriefly, describeChain, httpStatus, tsnetError } from '../errors';
import type { TsnetIpam } from '../ipam/driver';
import { logSafely } from '../log';
import { listenUnix } from '../unix-server';
import type { AdminError, PortsReport, ReconcileReport, StatusReport } from './contract';
import { endpointsStatus, networksStatus, poolsStatus, portEntries, repairLines } from './report';

/** What the admin routes read and act on; everything but the driver and the IPAM is optional. */
export interface AdminDeps {
  driver: Pick<TsnetDriver, 'state' | 'reconcilePlan' | 'reconcileNow'>;
  ipam: Pick<TsnetIpam, 'allocations'>;
  /** Resolves when the store answers a read (its health). */
  storeCheck: () => Promise<void>;
  ready: () => boolean;
  /** Running containers with their endpoint ids (Docker's API), to name the containers ports belong to. */
  containers?: () => Promise<ContainerEndpoints[]>;
  /** Prometheus text exposition; without it `/metrics` answers 503. */
  metrics?: () => Promise<string>;
}

/** Owner only: the admin socket reconciles the host's networks and shows all of them. */
const ADMIN_SOCKET_MODES = { socket: 0o600, dir: 0o700 };

function readVersion(): string {
  // src/admin or dist/admin, two levels under the package.
  try {
    const pkg: unknown = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
    const v: unknown = pkg !== null && typeof pkg === 'object' ? Reflect.get(pkg, 'version') : undefined;
    return typeof v === 'string' ? v : 'unknown';
  } catch {
    return 'unknown';
  }
}

function fail(res: Response, err: unknown): void {
  const e = asTsnetError(err);
  const body: AdminError = { Err: describeChain(e) };
  logSafely(e.category === 'internal' ? 'error' : 'warn', 'admin request failed', { code: e.code, error: describeBriefly(e) });
  res.status(httpStatus(e)).json(body);
}

/** `handler`'s JSON answer, or `{"Err"}` with the catalogue's status. */
function json<T>(handler: (req: Request) => Promise<T>) {
  return (req: Request, res: Response) => {
    handler(req).then(
      (body) => res.json(body),
      (err: unknown) => fail(res, err),
    );
  };
}

/** The admin API: read-only JSON routes, and `POST /reconcile`, which applies the plan. */
export function adminApp(deps: AdminDeps): express.Express {
  const version = readVersion();
  const app = express();
  app.disable('x-powered-by');

  app.get(
    '/status',
    json(async (): Promise<StatusReport> => {
      const t0 = performance.now();
      const store = await deps.storeCheck().then(
        () => ({ ok: true as const, ms: Math.round((performance.now() - t0) * 100) / 100 }),
        (err: unknown) => ({ ok: false as const, error: describeBriefly(err) }),
      );
      const { networks, endpoints } = deps.driver.state();
      const pools = poolsStatus(deps.ipam.allocations());
      return {
        version,
        ready: deps.ready(),
        uptimeS: Math.round(process.uptime()),
        store,
        networks: networksStatus(networks, endpoints, pools),
        endpoints: endpointsStatus(endpoints),
        pools,
      };
    }),
  );

  app.get(
    '/ports',
    json(async (req): Promise<PortsReport> => {
      const container = typeof req.query.container === 'string' && req.query.container !== '' ? req.query.container : undefined;
      let containers: ContainerEndpoints[] | undefined;
      let dockerError: string | undefined;
      try {
        containers = deps.containers ? await deps.containers() : undefined;
      } catch (err) {
        // Naming one container needs Docker; listing every port does not.
        if (container !== undefined) throw tsnetError('TSN_DOCKER', `cannot find container "${container.slice(0, 80)}"`, err);
        dockerError = describeBriefly(err);
      }
      if (container !== undefined && !containers) throw tsnetError('TSN_DOCKER', 'containers are named through Docker\'s API, which this tsnet does not read');
      const ports = portEntries(deps.driver.state().endpoints, containers, container);
      if (!ports) throw tsnetError('TSN_UNKNOWN_CONTAINER', `no running container "${container?.slice(0, 80) ?? ''}" (an id, a unique id prefix or a name)`);
      return { ports, ...(dockerError !== undefined ? { dockerError } : {}) };
    }),
  );

  app.get(
    '/reconcile',
    json(async (): Promise<ReconcileReport> => ({ applied: false, repairs: repairLines(await deps.driver.reconcilePlan()) })),
  );
  app.post(
    '/reconcile',
    json(async (): Promise<ReconcileReport> => ({ applied: true, repairs: repairLines(await deps.driver.reconcileNow()) })),
  );

  app.get('/metrics', (_req: Request, res: Response) => {
    const metrics = deps.metrics;
    if (!metrics) {
      fail(res, tsnetError('TSN_UNAVAILABLE', 'no metrics in this tsnet'));
      return;
    }
    metrics().then(
      (text) => res.type('text/plain; version=0.0.4').send(text),
      (err: unknown) => fail(res, err),
    );
  });

  app.use((req: Request, res: Response) => {
    const body: AdminError = { Err: `no admin route ${req.method} ${req.path.slice(0, 80)}` };
    res.status(404).json(body);
  });
  // express tells error handlers by their four parameters, so `_next` must be declared.
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => fail(res, err));
  return app;
}

/** Serves the admin API on `socket` (mode 0600, its directory made 0700); a stale socket is replaced. */
export function listenAdmin(deps: AdminDeps, socket: string): Promise<Server> {
  return listenUnix(adminApp(deps), socket, ADMIN_SOCKET_MODES);
}
