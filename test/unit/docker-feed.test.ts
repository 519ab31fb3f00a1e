import type { ContainerInfo, DockerStatus, NetworkInfo } from '../../src/docker/contract';
import { DockerEventFeed, type Timers } from '../../src/docker/feed';
import { log } from '../../src/log';
import { FakeDocker, type FakeContainer } from '../harness/fake-docker';

const NET = 'a'.repeat(64);

function cid(n: number): string {
  return n.toString(16).padStart(12, '0') + 'e'.repeat(52);
}

function box(n: number, extra: Partial<FakeContainer> = {}): Omit<FakeContainer, 'running'> {
  return { id: cid(n), name: `c${n}`, hostname: `h${n}`, networks: { front: { networkId: NET, ipv4: `10.9.0.${n}` } }, ...extra };
}

/** Backoff timers the test fires by hand; everything else runs for real. */
class ManualTimers implements Timers {
  readonly delays: number[] = [];
  private pending: (() => void) | undefined;
  cleared = 0;
  setTimeout(fn: () => void, ms: number): NodeJS.Timeout {
    this.delays.push(ms);
    this.pending = fn;
    return {} as NodeJS.Timeout;
  }
  clearTimeout(): void {
    this.cleared++;
    this.pending = undefined;
  }
  setImmediate(fn: () => void): NodeJS.Immediate {
    return setImmediate(fn);
  }
  fire(): void {
    const fn = this.pending;
    this.pending = undefined;
    if (!fn) throw new Error('no backoff timer pending');
    fn();
  }
  get waiting(): boolean {
    return this.pending !== undefined;
  }
}

/** Polls (real I/O needs real turns of the event loop); fails after many turns, never on elapsed time. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`never: ${what}`);
}

interface Harness {
  docker: FakeDocker;
  feed: DockerEventFeed;
  timers: ManualTimers;
  calls: ContainerInfo[][];
  nets: NetworkInfo[][];
  statuses: DockerStatus[];
  latest(): Map<string, ContainerInfo>;
}

const live: Harness[] = [];

async function setup(opts: { apiVersion?: string; min?: string; chunkBytes?: number; up?: boolean; now?: () => number } = {}): Promise<Harness> {
  const docker = new FakeDocker({ apiVersion: opts.apiVersion ?? '1.41', minApiVersion: opts.min ?? '1.12', chunkBytes: opts.chunkBytes ?? 7 });
  if (opts.up ?? true) await docker.start();
  const timers = new ManualTimers();
  const feed = new DockerEventFeed({ socketPath: docker.socketPath, timers, random: () => 1, backoffInitialMs: 100, backoffCapMs: 800, ...(opts.now ? { now: opts.now } : {}) });
  const h: Harness = {
    docker,
    feed,
    timers,
    calls: [],
    nets: [],
    statuses: [],
    latest: () => new Map((h.calls.at(-1) ?? []).map((c) => [c.name, c])),
  };
  feed.onContainers((c) => h.calls.push([...c]));
  feed.onNetworks((n) => h.nets.push([...n]));
  feed.onStatus((s) => h.statuses.push(s));
  live.push(h);
  return h;
}

afterEach(async () => {
  for (const h of live.splice(0)) {
    await h.feed.stop();
    await h.docker.destroy();
  }
});

test('first resync reports running containers with a network, then events keep the set current (1.44 shape, lines split in 7-byte chunks)', async () => {
  const h = await setup({ apiVersion: '1.44', min: '1.44' });
  h.docker.addNetwork({ id: NET, name: 'front', driver: 'tsnet', internal: false });
  h.docker.run(box(1, { networks: { front: { networkId: NET, ipv4: '10.9.0.1', aliases: ['api'] } } }));
  h.docker.run(box(2, { networks: {} }));
  h.feed.start();
  await until(() => h.calls.length === 1, 'first call');
  expect(h.calls[0].map((c) => [c.name, c.networks[0]?.ipv4, c.networks[0]?.aliases])).toEqual([['c1', '10.9.0.1', ['000000000001', 'api']]]);
  expect(h.nets.at(-1)).toEqual([{ id: NET, name: 'front', driver: 'tsnet', internal: false }]);
  expect(h.statuses).toEqual([{ up: true, apiVersion: '1.44' }]);

  h.docker.rename(cid(1), 'renamed');
  await until(() => h.latest().has('renamed'), 'rename');
  h.docker.stopContainer(cid(1));
  await until(() => h.latest().size === 0, 'stop');
  h.docker.startContainer(cid(1));
  await until(() => h.latest().has('renamed'), 'start');
  h.docker.run(box(3));
  await until(() => h.latest().has('c3'), 'new container');
  h.docker.remove(cid(3));
  await until(() => !h.latest().has('c3'), 'destroy');
});

test('a burst of events is one listener call with the final state', async () => {
  // A clock that stands still: the burst is held back however long the fake takes to answer.
  const h = await setup({ now: () => 0 });
  h.feed.start();
  await until(() => h.calls.length === 1, 'first call');
  let open!: () => void;
  const gate = new Promise<void>((r) => {
    open = r;
  });
  for (let i = 1; i <= 20; i++) h.docker.inspectGates.set(cid(i), gate);
  // 20 containers: 20 connects and 20 starts, each re-inspected.
  for (let i = 1; i <= 20; i++) h.docker.run(box(i));
  const inspects = (): number => h.docker.requests.filter((p) => p.includes('/containers/') && p.endsWith('/json') && !p.endsWith('containers/json')).length;
  await until(() => inspects() === 20, 'first inspect of each held');
  // Let the rest of the burst's lines (the starts) be read too before the answers come.
  await new Promise((r) => setTimeout(r, 20));
  h.docker.inspectGates.clear();
  open();
  await until(() => inspects() === 40 && h.latest().size === 20, 'all 20');
  await new Promise((r) => setTimeout(r, 20));
  expect(h.calls).toHaveLength(2);
  const before = h.calls.length;
  h.docker.stopContainer(cid(5));
  await until(() => h.calls.length > before, 'one more call');
  await new Promise((r) => setTimeout(r, 20));
  expect(h.calls.length).toBe(before + 1);
  expect(h.latest().has('c5')).toBe(false);
  expect(h.latest().size).toBe(19);
});

test('a container that is ready is reported once the wait bound passed, while another re-inspection is still held', async () => {
  let clock = 0;
  const h = await setup({ now: () => clock });
  h.feed.start();
  await until(() => h.calls.length === 1, 'first call');
  h.docker.inspectGates.set(cid(2), new Promise<void>(() => undefined));
  const inspected = (id: string): boolean => h.docker.requests.some((p) => p.includes(`/containers/${id}/json`));
  h.docker.run(box(2));
  await until(() => inspected(cid(2)), 'c2 inspect held');
  h.docker.run(box(1));
  await until(() => inspected(cid(1)), 'c1 inspected');
  await new Promise((r) => setTimeout(r, 20));
  // Within the bound, c1 waits for the burst.
  expect(h.calls).toHaveLength(1);
  clock = 150;
  h.docker.run(box(3));
  await until(() => h.latest().has('c3'), 'c3 after the bound');
  expect(h.latest().has('c1')).toBe(true);
  expect(h.latest().has('c2')).toBe(false);
});

test('re-inspections of one container are serialized: the later event wins over a slow earlier answer', async () => {
  const h = await setup();
  h.docker.run(box(1));
  h.feed.start();
  await until(() => h.latest().has('c1'), 'c1');
  let open!: () => void;
  h.docker.inspectGates.set(
    cid(1),
    new Promise<void>((r) => {
      open = r;
    }),
  );
  const inspects = (): number => h.docker.requests.filter((p) => p.includes(`/containers/${cid(1)}/json`)).length;
  const before = inspects();
  h.docker.stopContainer(cid(1)); // answer "not running", held at the gate
  await until(() => inspects() === before + 1, 'first inspect sent');
  h.docker.startContainer(cid(1));
  h.docker.inspectGates.delete(cid(1));
  // The second inspection waits for the first instead of racing it.
  await new Promise((r) => setTimeout(r, 20));
  expect(inspects()).toBe(before + 1);
  open();
  await until(() => inspects() === before + 2, 'second inspect');
  await until(() => h.latest().has('c1'), 'c1 back');
  await new Promise((r) => setTimeout(r, 20));
  expect(h.latest().has('c1')).toBe(true);
});

test('malformed, overlong and foreign lines on the stream are skipped; the feed keeps following', async () => {
  const h = await setup();
  h.feed.start();
  await until(() => h.docker.openStreams() === 1 && h.calls.length === 1, 'stream');
  h.docker.writeRaw('not json\n{"Type":"container"}\n' + 'x'.repeat(300 * 1024) + '\n{"Type":"image","Action":"pull","Actor":{"ID":"i"},"time":1}\n{"half":');
  h.docker.writeRaw('"line"}\n');
  h.docker.run(box(4));
  await until(() => h.latest().has('c4'), 'c4 after garbage');
  expect(h.statuses).toEqual([{ up: true, apiVersion: '1.41' }]);
});

test('after a restart with more than 1,000 events missed, the resync sees what changed while down; since= is the last event time', async () => {
  const h = await setup();
  h.docker.run(box(1));
  h.docker.run(box(2));
  h.feed.start();
  await until(() => h.latest().size === 2, 'both');
  h.docker.run(box(3));
  await until(() => h.latest().has('c3'), 'c3');
  await h.docker.stop();
  await until(() => h.timers.waiting, 'backoff after the drop');
  expect(h.statuses.at(-1)).toMatchObject({ up: false });
  h.docker.remove(cid(1));
  h.docker.stopContainer(cid(2));
  h.docker.run(box(9, { name: 'late' }));
  h.docker.noise(1500);
  h.docker.rename(cid(3), 'c3b');
  await h.docker.start();
  h.timers.fire();
  await until(() => h.statuses.at(-1)?.up === true, 'up again');
  await until(() => h.latest().has('late') && h.latest().has('c3b'), 'resync');
  expect([...h.latest().keys()].sort()).toEqual(['c3b', 'late']);
  const eventPaths = h.docker.requests.filter((p) => p.startsWith('/v1.41/events'));
  expect(eventPaths).toHaveLength(2);
  expect(new URL(eventPaths[0], 'http://x').searchParams.get('since')).toBeNull();
  // c3's start was the last event seen before the drop: 1,700,000,000 + 3 connects + 3 starts.
  expect(new URL(eventPaths[1], 'http://x').searchParams.get('since')).toBe(String(1_700_000_006));
  expect(JSON.parse(new URL(eventPaths[1], 'http://x').searchParams.get('filters')!)).toMatchObject({ type: ['container', 'network'] });
});

test('a dropped stream reconnects: the event stream is opened before the resync lists containers', async () => {
  const h = await setup();
  h.feed.start();
  await until(() => h.calls.length === 1, 'first');
  h.docker.requests.length = 0;
  h.docker.dropStreams();
  await until(() => h.timers.waiting, 'backoff');
  h.timers.fire();
  await until(() => h.statuses.at(-1)?.up === true && h.docker.openStreams() === 1, 'reconnected');
  const order = h.docker.requests.map((p) => p.split('?')[0]);
  expect(order.indexOf('/v1.41/events')).toBeGreaterThan(order.indexOf('/version'));
  expect(order.indexOf('/v1.41/events')).toBeLessThan(order.indexOf('/v1.41/containers/json'));
});

test('while Docker is down the feed backs off exponentially to the cap; status is reported once per change', async () => {
  const h = await setup({ up: false });
  h.feed.start();
  for (let i = 0; i < 5; i++) {
    await until(() => h.timers.waiting, `attempt ${i}`);
    h.timers.fire();
  }
  await until(() => h.timers.waiting, 'last');
  expect(h.timers.delays).toEqual([100, 200, 400, 800, 800, 800]);
  expect(h.statuses).toHaveLength(1);
  expect(h.statuses[0]).toMatchObject({ up: false, error: expect.stringContaining('ENOENT') });
  await h.docker.start();
  h.timers.fire();
  await until(() => h.statuses.length === 2, 'up');
  expect(h.statuses[1]).toEqual({ up: true, apiVersion: '1.41' });
  h.docker.dropStreams();
  await until(() => h.timers.waiting, 'backoff after up');
  // A successful connection reset the backoff.
  expect(h.timers.delays.at(-1)).toBe(100);
});

test('a server older than 1.41 is refused with a clear status, and retried', async () => {
  const h = await setup({ apiVersion: '1.40', min: '1.12' });
  h.feed.start();
  await until(() => h.timers.waiting, 'backoff');
  expect(h.statuses).toEqual([{ up: false, error: expect.stringContaining('Docker API 1.40 is too old') }]);
  expect(h.calls).toEqual([]);
});

test('stop() ends the stream and a pending backoff; no listener is called afterwards', async () => {
  const h = await setup();
  h.feed.start();
  await until(() => h.docker.openStreams() === 1 && h.calls.length === 1, 'stream');
  await h.feed.stop();
  await until(() => h.docker.openStreams() === 0, 'stream closed');
  const calls = h.calls.length;
  h.docker.run(box(1));
  await new Promise((r) => setTimeout(r, 20));
  expect(h.calls.length).toBe(calls);
  expect(h.timers.waiting).toBe(false);

  const down = await setup({ up: false });
  down.feed.start();
  await until(() => down.timers.waiting, 'backoff');
  await down.feed.stop();
  expect(down.timers.cleared).toBe(1);
});

test('network create is reported through onNetworks', async () => {
  const h = await setup();
  h.feed.start();
  await until(() => h.nets.length === 1, 'first networks');
  expect(h.nets[0]).toEqual([]);
  h.docker.addNetwork({ id: NET, name: 'front', driver: 'tsnet', internal: true });
  await until(() => h.nets.length === 2, 'network event');
  expect(h.nets[1]).toEqual([{ id: NET, name: 'front', driver: 'tsnet', internal: true }]);
});

test('failures are logged at warn at most once a minute, with the count left out', async () => {
  const write = jest.spyOn(log, 'write');
  try {
    let t = 0;
    const h = await setup({ up: false, now: () => t });
    const warns = (): { message: string; suppressed?: number }[] => write.mock.calls.map((c) => c[0] as { level: string; message: string; suppressed?: number }).filter((e) => e.level === 'warn');
    h.feed.start();
    for (let i = 0; i < 5; i++) {
      await until(() => h.timers.waiting, `attempt ${i}`);
      t += 1000;
      h.timers.fire();
    }
    await until(() => h.timers.waiting, 'sixth');
    expect(warns()).toHaveLength(1);
    t += 60_000;
    h.timers.fire();
    await until(() => warns().length === 2, 'second warn');
    expect(warns()[1]).toMatchObject({ message: 'Docker API unavailable; retrying in the background', suppressed: 5 });
  } finally {
    write.mockRestore();
  }
});

test('a status listener added after the feed connected hears "up" at once (a component started after the feed)', async () => {
  const h = await setup();
  h.feed.start();
  await until(() => h.statuses.some((s) => s.up), 'connected');
  const late: DockerStatus[] = [];
  h.feed.onStatus((s) => late.push(s));
  expect(late).toEqual([{ up: true, apiVersion: '1.41' }]);
});
