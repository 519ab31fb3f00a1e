/** The macvlan bench's results and their Markdown. */
import type { IperfRun } from '../lib/iperf';
import { callRows, f, mdTable, ok, okMin, statsRows } from '../lib/report';
import type { Pair, Stats } from '../lib/stats';
import type { Breakdown, CommandShare } from '../lib/tsnet-log';
import { type Variant, VARIANTS, type Wire } from './topology';

/** Issue 8, item 8: of raw ≥ 0.98 and ≥ 1.0 × Docker's macvlan; create+rm and the run share ≤ 1.0 × Docker's. */
export const TARGETS = { ofRawMin: 0.98, ofDockerMin: 1.0, createRmRatio: 1.0, shareRatio: 1.0 } as const;

export const G_PATHS = ['c2l', 'l2c', 'c2c'] as const;
/** tsnet's driver with Docker's IPAM in (a) and (b): its own /24, on tsnet's parent beside tsnet's network (no overlap). */
export const DOCKER_IPAM_SUBNET24 = '10.218.4';
export type GPath = (typeof G_PATHS)[number];
const PATH_LABEL: Record<GPath, string> = { c2l: 'container → LAN peer', l2c: 'LAN peer → container', c2c: 'container → container' };

export interface IperfPath {
  gbps: Record<Variant, Stats>;
  tsnetOfRaw: number;
  dockerOfRaw: number;
  tsnetOfDocker: number;
  /** The same ratios taken within each round, in percent, then summarised. */
  perRoundPct: { tsnetOfRaw: Stats; dockerOfRaw: Stats; tsnetOfDocker: Stats };
  runs: Record<Variant, IperfRun[]>;
}

export interface Results {
  date: string;
  machine: Record<string, unknown> & {
    hostname: string;
    nproc: number;
    cpu: string;
    memoryGiB: number;
    kernel: string;
    dockerd: string;
    dockerCli: string;
    node: string;
    tsnetCommit: string;
    iperf3: string;
    N: number;
    warmup: number;
    iperfSeconds: number;
    iperfReps: number;
  };
  wires: Record<Variant, Wire>;
  durationS: number;
  /** 1-, 5- and 15-minute load averages at the start, after (a), after (b) and at the end. */
  loadavg: { start: number[]; afterA: number[]; afterB: number[]; end: number[] };
  otherDockerdSeen: number;
  a: { create: Pair; rm: Pair; createRm: Pair; tsnetDockerIpam: { create: Stats; rm: Stats; createRm: Stats; createRmRatio: number } };
  b: {
    run: Pair;
    none: Stats;
    shareTsnetMs: number;
    shareDockerMs: number;
    shareRatio: number;
    tsnetBackgroundMs: Stats;
    tsnetDockerIpam: { run: Stats; shareMs: number; shareRatio: number };
  };
  f: Breakdown & { commands: Record<string, CommandShare> };
  g: {
    paths: Record<GPath, IperfPath>;
    links: Record<Variant, { client: string; server: string }>;
    seconds: number;
    reps: number;
    load: number[];
    orders: string[];
  };
}

const gb = (x: number) => x.toFixed(2);
const la = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(' ');
const r3 = (x: number) => x.toFixed(3);
/** A per-round ratio in percent: median (min–max). */
const pctRange = (s: Stats) => `${s.median.toFixed(1)} % (${s.min.toFixed(1)}–${s.max.toFixed(1)})`;
/** Spread of a variant's runs: (max − min) / median. */
const spread = (s: Stats) => `${((100 * (s.max - s.min)) / s.median).toFixed(1)} %`;

export function summaryRows(r: Results): string[][] {
  const rows: string[][] = [
    ['measurement', 'tsnet', 'Docker macvlan', 'raw macvlan', 'tsnet / raw', 'Docker / raw', 'tsnet / Docker', 'target', 'met'],
  ];
  for (const p of G_PATHS) {
    const x = r.g.paths[p];
    const met = [okMin(x.tsnetOfRaw, TARGETS.ofRawMin), okMin(x.tsnetOfDocker, TARGETS.ofDockerMin)].join(' / ');
    rows.push([
      `(g) ${PATH_LABEL[p]} (Gbit/s, median)`,
      gb(x.gbps.tsnet.median),
      gb(x.gbps.docker.median),
      gb(x.gbps.raw.median),
      r3(x.tsnetOfRaw),
      r3(x.dockerOfRaw),
      r3(x.tsnetOfDocker),
      `≥ ${TARGETS.ofRawMin} of raw / ≥ ${TARGETS.ofDockerMin.toFixed(1)} × Docker`,
      met,
    ]);
  }
  const ms = (label: string, x: Pair, target?: number) =>
    rows.push([
      label,
      f(x.tsnet.median),
      f(x.docker.median),
      '',
      '',
      '',
      r3(x.ratio),
      target === undefined ? '' : `≤ ${target.toFixed(1)}`,
      target === undefined ? '' : ok(x.ratio, target),
    ]);
  ms('(a) network create (ms, median)', r.a.create);
  ms('(a) network rm (ms, median)', r.a.rm);
  ms('(a) network create + rm (ms, median)', r.a.createRm, TARGETS.createRmRatio);
  ms('(b) run --rm true on the network (ms, median)', r.b.run);
  rows.push([
    '(b) networking share: run − run --network none (ms)',
    f(r.b.shareTsnetMs),
    f(r.b.shareDockerMs),
    '',
    '',
    '',
    r3(r.b.shareRatio),
    `≤ ${TARGETS.shareRatio.toFixed(1)}`,
    ok(r.b.shareRatio, TARGETS.shareRatio),
  ]);
  const di = (label: string, t: number, d: number, ratio: number) =>
    rows.push([`${label}, tsnet with Docker's IPAM`, f(t), f(d), '', '', '', r3(ratio), '', '']);
  di('(a) network create + rm (ms, median)', r.a.tsnetDockerIpam.createRm.median, r.a.createRm.docker.median, r.a.tsnetDockerIpam.createRmRatio);
  di('(b) networking share (ms)', r.b.tsnetDockerIpam.shareMs, r.b.shareDockerMs, r.b.tsnetDockerIpam.shareRatio);
  return rows;
}

function iperfRows(r: Results): string[][] {
  const rows: string[][] = [
    ['path', 'variant', 'median Gbit/s', 'min–max', 'spread', 'ratio of medians (of raw)', 'per round: % of raw, median (min–max)'],
  ];
  for (const p of G_PATHS) {
    const x = r.g.paths[p];
    for (const v of VARIANTS) {
      const s = x.gbps[v];
      const perRound = v === 'tsnet' ? x.perRoundPct.tsnetOfRaw : v === 'docker' ? x.perRoundPct.dockerOfRaw : undefined;
      const ofRaw = v === 'tsnet' ? x.tsnetOfRaw : v === 'docker' ? x.dockerOfRaw : 1;
      rows.push([PATH_LABEL[p], v, gb(s.median), `${gb(s.min)}–${gb(s.max)}`, spread(s), r3(ofRaw), perRound ? pctRange(perRound) : '']);
    }
    rows.push([PATH_LABEL[p], 'tsnet / Docker', '', '', '', r3(x.tsnetOfDocker), `${pctRange(x.perRoundPct.tsnetOfDocker)} of Docker`]);
  }
  return rows;
}

function everyRunRows(r: Results): string[][] {
  const rows: string[][] = [['path', 'variant', ...r.g.load.map((l, i) => `round ${i + 1} (load ${l.toFixed(2)})`)]];
  for (const p of G_PATHS) {
    for (const v of VARIANTS) {
      rows.push([
        PATH_LABEL[p],
        v,
        ...r.g.paths[p].runs[v].map(
          (x) => `${gb(x.gbps)}${x.cpuSender < 80 ? ' †' : ''} (${x.retransmits} retr, ${x.cpuSender.toFixed(0)} / ${x.cpuReceiver.toFixed(0)} %)`,
        ),
      ]);
    }
  }
  return rows;
}

export function renderMarkdown(r: Results): string {
  const m = r.machine;
  const w = r.wires;
  const out: string[] = [];
  const para = (...lines: string[]) => out.push(lines.join(' '), '');
  out.push(`# tsnet macvlan benchmark — ${r.date.slice(0, 10)} on ${m.hostname}`, '');
  para(
    `Machine: ${m.nproc} CPUs (${m.cpu}), ${m.memoryGiB} GiB RAM, kernel ${m.kernel}; dockerd ${m.dockerd} (CLI ${m.dockerCli}); Node.js ${m.node};`,
    `tsnet ${m.tsnetCommit}; ${m.iperf3.replace(/ \(.*$/, '')}. N = ${m.N} after ${m.warmup} warm-ups for (a) and (b); (g) ${m.iperfReps} rounds × ${m.iperfSeconds} s`,
    `per path and variant. Load average (1, 5, 15 min) at start ${la(r.loadavg.start)}, after (a) ${la(r.loadavg.afterA)}, after (b) ${la(r.loadavg.afterB)},`,
    `at end ${la(r.loadavg.end)} (${m.nproc} CPUs). Run took ${r.durationS.toFixed(0)} s.`,
  );
  if (r.otherDockerdSeen > 0)
    para(`**Warning:** ${r.otherDockerdSeen} other dockerd process(es) ran on the host during the run; numbers may be disturbed.`);
  out.push('## Set-up', '');
  para(
    'One private dockerd (`--iptables=true`, `--bridge=none`), tsnet as a legacy plugin (`-d <name> --ipam-driver <name> -o mode=macvlan`,',
    '`--log-level debug`). The parents are veth pairs the bench makes: the host end is `-o parent=`, the other end sits in a "LAN peer"',
    'namespace with the subnet\'s `.1` (also the networks\' gateway), so "LAN" traffic crosses a real wire (a veth) and leaves no host.',
    "One pair per variant, alike but for the name, because Docker's macvlan refuses a second network on a parent and the variants must",
    `not share a wire: raw \`${w.raw.parent}\` ${w.raw.subnet24}.0/24, tsnet \`${w.tsnet.parent}\` ${w.tsnet.subnet24}.0/24, Docker \`${w.docker.parent}\` ${w.docker.subnet24}.0/24.`,
    "All macvlan children in bridge mode (both drivers' default, passed explicitly as `-o macvlan_mode=bridge`).",
  );
  para(
    '**Raw macvlan pair** (the ceiling; no Docker): two namespaces, each with a macvlan child of the raw parent moved in as `eth0` and',
    'addressed with `ip`, as a container runtime would; iperf3 runs there with `ip netns exec`. **Containers**: busybox containers running',
    "the host's iperf3 (binary and libraries bind-mounted read-only, as in `bench/run.ts`), one server and one client per driver, the",
    'client driven with `docker exec`. Same binary, same kernel path: the raw pair differs from a container only in the cgroup and mount',
    'namespace, so tsnet / raw and Docker / raw say what each driver costs on the data path (nothing, if the link is made alike).',
  );
  out.push('## Summary', '');
  out.push(mdTable(summaryRows(r)), '');
  para(
    '(b) networking share = median(`docker run --rm --network <net> busybox true`) − median(the same with `--network none`): what',
    `attaching one macvlan network adds (dockerd's work plus the driver's). \`none\` median ${f(r.b.none.median)} ms. After each run the bench waits,`,
    `untimed, until no macvlan child of the parent is left on the host; for tsnet that took ${f(r.b.tsnetBackgroundMs.median)} ms (median) after the CLI returned.`,
  );
  para(
    "(a) and (b) also measure tsnet's driver with Docker's default IPAM (`-d <name> -o mode=macvlan`, no `--ipam-driver`; its own",
    `${DOCKER_IPAM_SUBNET24}.0/24 on tsnet's parent), which tells the IPAM's round trips from the driver's; the three kinds go in a rotating`,
    'order (all six orders in turn), `--network none` last. The targets are for tsnet with its own IPAM.',
  );
  out.push('## (g) Throughput: iperf3, one TCP stream', '');
  para(
    `\`iperf3 -c … -t ${r.g.seconds} -O 1 -J\` (the first second, slow start, omitted; Gbit/s at the receiver), one unmeasured 1-second run`,
    `per path and variant first, then ${r.g.reps} rounds; in each round every path is measured for the three variants in the round's order`,
    `(${r.g.orders.map((o) => `\`${o}\``).join(', ')}: every order once per six rounds, so no variant always goes first or follows the same one).`,
    "Container → LAN peer: client in the container, server in the LAN namespace on the wire's `.1`; LAN peer → container: the same with",
    '`-R` (the LAN peer sends); container → container: two children of one parent, macvlan bridge mode (the frames never reach the wire).',
    'Ratios: of the medians, and per round (the variants of one path measured back to back, seconds apart, under the same load), summarised.',
  );
  out.push(mdTable(iperfRows(r)), '');
  para(
    "The endpoints' `eth0` (`ip -d link` in each namespace), which must agree for the comparison to be of the drivers alone",
    '(`txqlen ?`: none reported, i.e. 0, as Docker makes its children; with qdisc `noqueue` there is no queue for it to size):',
  );
  out.push(mdTable([['variant', 'client', 'server'], ...VARIANTS.map((v) => [v, r.g.links[v].client, r.g.links[v].server])]), '');
  para(
    "Every run: Gbit/s (TCP retransmits, CPU % of one core: sender / receiver, iperf3's own figures). One stream is CPU-bound on this",
    'machine; a sender below 80 % of a core (†) was short of CPU, and its number says more about other load than about the path.',
    `The 1-minute load average after each round is in the column head (${m.nproc} CPUs: above ${m.nproc}, something else ran).`,
  );
  out.push(mdTable(everyRunRows(r)), '');
  out.push('## Where the time goes: (a) and (b) on tsnet', '');
  para(
    "tsnet's debug log during the measured iterations, per docker command: the plugin calls dockerd made while it ran, and the rest (dockerd + CLI).",
  );
  out.push(
    mdTable([
      ['docker command on tsnet', 'n', 'median wall ms', 'median Σ plugin-call ms', 'median rest (dockerd + CLI) ms', 'plugin calls, in order'],
      ...Object.entries(r.f.commands).map(([k, c]) => [
        k,
        String(c.wall.n),
        f(c.wall.median),
        f(c.pluginCalls.median),
        f(c.rest.median),
        c.calls.join(' → '),
      ]),
    ]),
    '',
  );
  para('Per plugin call ("exec" = child processes such as `ip`; "store" = SQLite commits; "other" = HTTP parsing, zod, logic, logging):');
  out.push(mdTable(callRows(r.f)), '');
  out.push(mdTable(statsRows('step (setup pipeline)', r.f.steps)), '');
  out.push(mdTable(statsRows('exec (call: command)', r.f.exec)), '');
  out.push(mdTable(statsRows('store commit (call)', r.f.storeCommit)), '');
  out.push('## ipvlan and 802.1Q VLAN', '');
  para(
    "Not measured here: this machine's kernel has no ipvlan, 802.1Q or dummy links. Their tests run inside a software-emulated VM",
    '(`../shared/tools/vmrun`), where throughput and latency say nothing about a real host; they are run there only as a functional check',
    '(issue 8, item 7), not timed.',
  );
  return out.join('\n');
}
