/**
 * The crash-point sweep (test/e2e/crash-points*.test.ts): a docker scenario run with tsnet's test-only fault switch
 * (src/fault.ts) at step k, tsnet restarted without it, then checks of what the crash left: the store against the
 * kernel and tsnet's nftables table, leaked links and held host ports, and dockerd's view (the scenario can be
 * completed). One {@link CrashSweep} per suite; it owns the tsnet process (setupE2E with `tsnet: false`).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { z } from 'zod';
import { BUSYBOX_IMAGE } from './busybox';
import { eventually, patient, run, sleep, waitFor } from './exec';
import { linksOwnedBy } from './host';
import { type E2EEnv, removeLeftovers, TsnetProcess } from './tsnet';

/** One scenario: a network and one container on it, with ports published where the network allows. */
export interface Scenario {
  name: string;
  /** `docker network create` arguments after `-d NAME --ipam-driver NAME`, without the network name. */
  network: string[];
  /** `docker run` arguments before the image (network and name are added). */
  run: string[];
  /** Host ports (TCP) the container publishes: free on the host once nothing holds them. */
  hostPorts: number[];
}

/** One crash point's outcome: the step it died after, and what was wrong afterwards (empty: nothing). */
export interface CrashOutcome {
  k: number;
  /** The step tsnet died after (undefined: it did not die). */
  step: string | undefined;
  problems: string[];
}

const Sub = z.looseObject({});
const Network = z.looseObject({ id: z.string(), mode: z.string(), bridge: z.string().optional(), parent: z.string().optional(), settings: z.looseObject({ enableIcc: z.boolean().optional() }).optional(), shim: z.looseObject({ link: z.string() }).optional() });
const Endpoint = z.looseObject({ id: z.string(), networkId: z.string(), hostIf: z.string().optional(), containerIf: z.string().optional(), link: z.string().optional(), sandboxKey: z.string().optional(), ports: z.array(Sub).optional() });
const Parent = z.looseObject({ link: z.string(), owned: z.boolean() });

/** The tsnet store's records (read-only, while tsnet may run). */
export function readRecords(dbFile: string): { collections: Record<string, number>; networks: Array<z.infer<typeof Network>>; endpoints: Array<z.infer<typeof Endpoint>>; parents: Array<z.infer<typeof Parent>>; tombstones: string[] } {
  const db = new Database(dbFile, { readonly: true, fileMustExist: true });
  try {
    const rows = z.array(z.object({ collection: z.string(), key: z.string(), value: z.string() })).parse(db.prepare('SELECT collection, key, value FROM records').all());
    const of = <T>(c: string, schema: z.ZodType<T>): T[] => rows.filter((r) => r.collection === c).map((r) => schema.parse(JSON.parse(r.value)));
    const collections: Record<string, number> = {};
    for (const r of rows) collections[r.collection] = (collections[r.collection] ?? 0) + 1;
    return { collections, networks: of('network', Network), endpoints: of('endpoint', Endpoint), parents: of('parent', Parent), tombstones: rows.filter((r) => r.collection === 'tombstone').map((r) => r.key) };
  } finally {
    db.close();
  }
}

const NftJson = z.object({ nftables: z.array(z.looseObject({ set: z.looseObject({ name: z.string(), elem: z.array(z.unknown()).optional() }).optional(), map: z.looseObject({ name: z.string(), elem: z.array(z.unknown()).optional() }).optional() })) });

/** Elements of every set and map of table `family name` (JSON text each), or undefined when the table is absent. */
export async function nftElements(family: 'inet' | 'bridge', table: string): Promise<Map<string, string[]> | undefined> {
  const r = await run('nft', ['-j', 'list', 'table', family, table]);
  if (r.code !== 0) return undefined;
  const out = new Map<string, string[]>();
  for (const o of NftJson.parse(JSON.parse(r.stdout)).nftables) {
    const s = o.set ?? o.map;
    if (s) out.set(s.name, (s.elem ?? []).map((e) => JSON.stringify(e)));
  }
  return out;
}

/** Whether TCP `port` can be bound on every IPv4 address of the host (nobody holds it). */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host: '0.0.0.0', exclusive: true }, () => s.close(() => resolve(true)));
  });
}

/** The step lines of a trace file (`<n> <kind> <name...> <call>`). */
export function traceSteps(file: string): string[] {
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') : [];
}

/** A trace line without its number: the same step in two runs reads the same. */
export function stepName(line: string | undefined): string {
  return line?.replace(/^\d+ /, '') ?? '(none)';
}

/** {@link stepName} without the ids of the run (network and endpoint ids, link and tombstone names made of them: 7 hex digits or more). */
export function stepKind(line: string | undefined): string {
  return stepName(line).replace(/[0-9a-f]{7,}/g, '*');
}

/** Runs the crash sweep of scenarios on one dockerd. */
export class CrashSweep {
  private n = 0;

  constructor(
    private readonly env: E2EEnv,
    /** Extra tsnet arguments. */
    private readonly args: (env: E2EEnv) => string[] = () => [],
  ) {}

  private get dir(): string {
    return path.join(this.env.dockerd.dir, 'tsnet');
  }

  private get dbFile(): string {
    return path.join(this.dir, 'state', 'tsnet.db');
  }

  /** A tsnet on the suite's state dir and socket; `fault` sets the switch and a trace file. */
  tsnet(fault?: { exitAfter?: number; trace: string }): TsnetProcess {
    const env: NodeJS.ProcessEnv = fault ? { TSNET_FAULT_TRACE: fault.trace, ...(fault.exitAfter !== undefined ? { TSNET_FAULT_EXIT_AFTER: String(fault.exitAfter) } : {}) } : {};
    return new TsnetProcess({
      name: this.env.name,
      stateDir: path.join(this.dir, 'state'),
      logFile: path.join(this.dir, 'tsnet.log'),
      extraArgs: ['--docker-socket', this.env.dockerd.socket, '--dns-listen', 'none', '--reclaim-grace', '1', ...this.args(this.env)],
      env,
    });
  }

  newTrace(): string {
    return path.join(this.dir, `trace-${++this.n}.txt`);
  }

  /** The scenario's steps as docker commands: each must succeed when tsnet does not crash. */
  steps(s: Scenario): Array<{ what: string; args: string[] }> {
    const name = this.env.name;
    return [
      { what: 'network create', args: ['network', 'create', '-d', name, '--ipam-driver', name, ...s.network, s.name] },
      { what: 'run', args: ['run', '-d', '--name', `${s.name}-c`, '--network', s.name, ...s.run, BUSYBOX_IMAGE, 'sleep', '3600'] },
      { what: 'stop', args: ['stop', '-t', '0', `${s.name}-c`] },
      { what: 'rm', args: ['rm', `${s.name}-c`] },
      { what: 'network rm', args: ['network', 'rm', s.name] },
    ];
  }

  /**
   * The scenario with the switch at `exitAfter` (undefined: trace only); stops at the first docker command that
   * fails. When tsnet dies, a tsnet without the switch is started at once (as a supervisor would), so dockerd's
   * retries of the cut-off call reach it; that process is returned running (`restarted`) for {@link recover}.
   */
  async runScenario(s: Scenario, exitAfter: number | undefined): Promise<{ trace: string[]; startSteps: number; died: boolean; restarted?: TsnetProcess; failed?: string }> {
    const trace = this.newTrace();
    const t = this.tsnet({ trace, ...(exitAfter !== undefined ? { exitAfter } : {}) });
    await t.start();
    const startSteps = traceSteps(trace).length;
    let restarted: Promise<TsnetProcess> | undefined;
    const watch = setInterval(() => {
      if (t.pid !== undefined || restarted) return;
      restarted = (async () => {
        await t.kill9();
        const again = this.tsnet();
        await again.start();
        return again;
      })();
    }, 50);
    let failed: string | undefined;
    try {
      for (const step of this.steps(s)) {
        const r = await this.env.docker.dockerTry(step.args, { timeoutMs: patient(90_000) });
        if (r.code !== 0) {
          failed = `${step.what}: ${r.stderr.trim().slice(0, 200)}`;
          break;
        }
        if (restarted) break;
      }
      // The last steps run in the background after the last reply (link deletion, the table's removal).
      if (exitAfter !== undefined && !restarted) await waitFor(() => restarted !== undefined, patient(3_000), () => '').catch(() => undefined);
    } finally {
      clearInterval(watch);
    }
    if (!restarted && t.pid === undefined) restarted = t.kill9().then(async () => {
      const again = this.tsnet();
      await again.start();
      return again;
    });
    const died = restarted !== undefined;
    if (!died) await t.stop();
    return { trace: traceSteps(trace), startSteps, died, ...(restarted ? { restarted: await restarted } : {}), ...(failed ? { failed } : {}) };
  }

  /** Owned links no record names, and records whose links are missing, and firewall elements against records. */
  async consistency(s: Scenario): Promise<string[]> {
    const problems: string[] = [];
    const rec = readRecords(this.dbFile);
    const owned = new Set(await linksOwnedBy(`tsnet:${this.env.name}`));
    const hostLinks = new Set((await run('ip', ['-o', 'link', 'show'])).stdout.split('\n').flatMap((l) => /^\d+: ([^:@\s]+)/.exec(l)?.[1] ?? []));
    const named = new Set<string>([...rec.tombstones]);
    for (const n of rec.networks) {
      for (const l of [n.bridge, n.shim?.link]) if (l) named.add(l);
      if (n.bridge && !hostLinks.has(n.bridge)) problems.push(`network ${n.id.slice(0, 12)}: bridge ${n.bridge} missing`);
    }
    for (const p of rec.parents) named.add(p.link);
    for (const e of rec.endpoints) {
      for (const l of [e.hostIf, e.containerIf, e.link]) if (l) named.add(l);
      if (!rec.networks.some((n) => n.id === e.networkId)) problems.push(`endpoint ${e.id.slice(0, 12)}: its network has no record`);
      if (e.hostIf && !hostLinks.has(e.hostIf)) problems.push(`endpoint ${e.id.slice(0, 12)}: host veth ${e.hostIf} missing`);
    }
    for (const l of owned) if (!named.has(l)) problems.push(`leaked link ${l} (owner tag, no record)`);
    const inet = await nftElements('inet', this.env.name);
    const wantTable = rec.networks.some((n) => n.mode === 'bridge');
    if (!inet) {
      if (wantTable) problems.push('nft table missing while a bridge network has a record');
    } else {
      const ports = ['dnat4', 'dnat4any', 'dnat6', 'dnat6any'].flatMap((m) => inet.get(m) ?? []);
      const recorded = rec.endpoints.flatMap((e) => e.ports ?? []);
      if (ports.length !== recorded.length) problems.push(`nft port map elements ${ports.length} != ${recorded.length} recorded ports (${ports.join(' ')})`);
      const bridges = inet.get('bridges') ?? [];
      const recBridges = rec.networks.flatMap((n) => (n.mode === 'bridge' && n.bridge ? [n.bridge] : []));
      if (bridges.length !== recBridges.length) problems.push(`nft bridges set ${bridges.join(' ')} != records ${recBridges.join(' ')}`);
    }
    const noicc = (await nftElements('bridge', this.env.name))?.get('noiccports') ?? [];
    const recNoicc = rec.endpoints.filter((e) => rec.networks.find((n) => n.id === e.networkId)?.settings?.enableIcc === false && e.hostIf);
    if (noicc.length !== recNoicc.length) problems.push(`nft noiccports ${noicc.join(' ')} != ${recNoicc.length} recorded icc=false ports`);
    const held = new Set(rec.endpoints.flatMap((e) => (e.ports ?? []).map((p) => Number(p.hostPort))));
    for (const port of s.hostPorts) if (!held.has(port) && !(await portFree(port))) problems.push(`host port ${port} held with no record publishing it`);
    return problems;
  }

  /**
   * After a crash: restart tsnet without the switch, check what the crash left, then complete the scenario through
   * dockerd from wherever it stopped (network made if missing, container started or run, stopped, removed, network
   * removed) and check that nothing of tsnet's is left.
   */
  async recover(s: Scenario, running?: TsnetProcess): Promise<string[]> {
    const problems: string[] = [];
    const t = running ?? this.tsnet();
    if (!running) await t.start();
    try {
      // Past the reclaim grace (1 s): what dockerd forgot is gone by now (src/reclaim/), the reaper has run.
      await sleep(patient(2_500));
      problems.push(...(await this.consistency(s)).map((p) => `after restart: ${p}`));
      const d = this.env.docker;
      const [create, runC, stop, rm, netRm] = this.steps(s);
      const attempt = async (what: string, args: string[]): Promise<boolean> => {
        const r = await d.dockerTry(args, { timeoutMs: patient(90_000) });
        if (r.code !== 0) problems.push(`dockerd: ${what} failed: ${r.stderr.trim().slice(0, 300)}`);
        return r.code === 0;
      };
      const netExists = (await d.dockerTry(['network', 'inspect', s.name])).code === 0;
      if (!netExists) await attempt(create.what, create.args);
      const cExists = (await d.dockerTry(['inspect', `${s.name}-c`])).code === 0;
      if (cExists) await attempt('start (the container can start)', ['start', `${s.name}-c`]);
      else await attempt(runC.what, runC.args);
      await attempt(stop.what, stop.args);
      await attempt(rm.what, rm.args);
      if (!(await attempt(netRm.what, netRm.args))) {
        // Leave the next crash point a clean dockerd whatever happened.
        await d.removeAllContainers().catch(() => undefined);
        await d.dockerTry(['network', 'rm', s.name]);
      }
      // Links, the table and tombstones go in the background: give the reaper its moment.
      const leftovers = async (): Promise<string[]> => {
        const left = await linksOwnedBy(`tsnet:${this.env.name}`);
        // Host-wide records outlive every network by design: forwarding tsnet turned on, the Docker daemon it trusts.
        const { host: _host, trust: _trust, ...rest } = readRecords(this.dbFile).collections;
        return [
          ...(left.length > 0 ? [`at the end: links left: ${left.join(' ')}`] : []),
          ...(Object.keys(rest).length > 0 ? [`at the end: records left: ${JSON.stringify(rest)}`] : []),
          ...((await nftElements('inet', this.env.name)) !== undefined ? ['at the end: nft table inet still there'] : []),
        ];
      };
      await eventually(async () => expect(await leftovers()).toEqual([]), patient(5_000)).catch(() => undefined);
      problems.push(...(await leftovers()));
      for (const port of s.hostPorts) if (!(await portFree(port))) problems.push(`at the end: host port ${port} held`);
    } finally {
      await t.stop().catch((e: unknown) => problems.push(`tsnet stop: ${(e as Error).message.slice(0, 200)}`));
    }
    return problems;
  }

  /**
   * Removes whatever a crash point left (containers, the network, tsnet's links, tables, DOCKER-USER rule, state), so
   * the next one starts clean; what had to be removed is returned (already reported by {@link recover}'s checks).
   */
  async scrub(s: Scenario): Promise<string[]> {
    await this.env.docker.removeAllContainers().catch(() => undefined);
    await this.env.docker.dockerTry(['network', 'rm', s.name]);
    const left = await removeLeftovers(this.tsnet()).then(
      () => [],
      (e: unknown) => [(e as Error).message],
    );
    fs.rmSync(path.join(this.dir, 'state'), { recursive: true, force: true });
    return left;
  }
}
