import { parseArgs } from 'node:util';
import { AdminClient } from '../admin/client';
import { loadConfig } from '../config';
import { describeChain, errnoCode, TsnetError } from '../errors';
import { formatPorts, formatReconcile, formatStatus } from './format';

/** The `tsnet` subcommands besides the daemon; src/main.ts sends `tsnet <one of these> ...` here. */
export const SUBCOMMANDS = ['status', 'ports', 'reconcile', 'doctor', 'help'] as const;
type Subcommand = (typeof SUBCOMMANDS)[number];

/** Exit codes: 0 done, 1 failed (or doctor found a FAIL), 2 usage error. */
const FAILED = 1;
const USAGE = 2;

const COMMON = `  --admin-socket PATH  the daemon's admin socket (default /run/tsnet/admin.sock; env TSNET_ADMIN_SOCKET)
  --config FILE        config file read for the sockets (default /etc/tsnet/config.json; env TSNET_CONFIG)
  --help`;

const HELP: Record<Subcommand, string> = {
  help: `usage: tsnet [daemon] [options]   run the daemon (tsnet --help: its options)
       tsnet status [--json]        networks, endpoints, addresses, pool use, store health
       tsnet ports [CONTAINER]      published ports, as docker port prints them
       tsnet reconcile [--dry-run]  the repairs that make the host match tsnet's records; applied without --dry-run
       tsnet doctor                 checks the host, the sockets and the daemon, each with how to fix it
Every subcommand takes --help and --admin-socket PATH. Exit codes: 0 ok, 1 failed, 2 usage error.`,
  status: `usage: tsnet status [--json]\nThe daemon's networks, endpoints, addresses, pool use and store health.\n  --json               the admin socket's answer as it is\n${COMMON}`,
  ports: `usage: tsnet ports [CONTAINER] [--json]
Ports published on tsnet networks, in docker port's format (dockerd cannot show a remote driver's ports:
moby/libnetwork#2451). CONTAINER: a name, an id or a unique id prefix; without it, every container's.
  --json               the admin socket's answer as it is\n${COMMON}`,
  reconcile: `usage: tsnet reconcile [--dry-run] [--json]
Plans the repairs that make the host (links, addresses, routes, firewall) match tsnet's records and applies them.
  --dry-run            print the plan, change nothing
  --json               the admin socket's answer as it is\n${COMMON}`,
  doctor: `usage: tsnet doctor
Checks kernel features, nftables, br_netfilter, forwarding, dockerd and its firewall mode, the plugin, Docker and
admin sockets; prints each as ok, warn or FAIL with how to fix it. Exit code 1 if any FAIL. Works with the daemon down.
  --socket PATH        plugin socket (default /run/docker/plugins/tsnet.sock; env TSNET_SOCKET)
  --docker-socket PATH Docker's socket (default /var/run/docker.sock; env DOCKER_HOST)\n${COMMON}`,
};

class UsageError extends Error {}

interface Io {
  out: (line: string) => void;
  err: (line: string) => void;
}

const stdio: Io = { out: (l) => process.stdout.write(l + '\n'), err: (l) => process.stderr.write(l + '\n') };

/** Sockets and the rest as the daemon would resolve them: flags, TSNET_* env, config file, defaults. */
function settings(v: Partial<Record<'admin-socket' | 'config' | 'socket' | 'docker-socket', string | undefined>>) {
  const argv = (['admin-socket', 'config', 'socket', 'docker-socket'] as const).flatMap((k) => {
    const x = v[k];
    return x === undefined ? [] : [`--${k}`, x];
  });
  const c = loadConfig(argv);
  if (c === 'help') throw new UsageError('unexpected --help');
  return c;
}

const common = { 'admin-socket': { type: 'string' }, config: { type: 'string' }, help: { type: 'boolean' }, json: { type: 'boolean' } } as const;

async function command(sub: Subcommand, args: string[], io: Io): Promise<number> {
  switch (sub) {
    case 'help':
      io.out(HELP.help);
      return 0;
    case 'status': {
      const { values } = parseArgs({ args, options: common, strict: true });
      if (values.help) return help(io, sub);
      const s = await new AdminClient(settings(values).adminSocket).status();
      io.out(values.json ? JSON.stringify(s, null, 2) : formatStatus(s));
      return 0;
    }
    case 'ports': {
      const { values, positionals } = parseArgs({ args, options: common, strict: true, allowPositionals: true });
      if (values.help) return help(io, sub);
      if (positionals.length > 1) throw new UsageError(`ports takes at most one CONTAINER (got ${positionals.length})`);
      const r = await new AdminClient(settings(values).adminSocket).ports(positionals[0]);
      if (values.json) io.out(JSON.stringify(r, null, 2));
      else {
        if (r.dockerError !== undefined) io.err(`tsnet: containers not named (Docker's API: ${r.dockerError})`);
        for (const line of formatPorts(r.ports, positionals.length === 1)) io.out(line);
      }
      return 0;
    }
    case 'reconcile': {
      const { values } = parseArgs({ args, options: { ...common, 'dry-run': { type: 'boolean' } }, strict: true });
      if (values.help) return help(io, sub);
      const { 'dry-run': dry, json, help: _h, ...sockets } = values;
      const r = await new AdminClient(settings(sockets).adminSocket).reconcile(!dry);
      io.out(json ? JSON.stringify(r, null, 2) : formatReconcile(r).join('\n'));
      return 0;
    }
    case 'doctor': {
      const { values } = parseArgs({ args, options: { ...common, socket: { type: 'string' }, 'docker-socket': { type: 'string' } }, strict: true });
      if (values.help) return help(io, sub);
      const { json, help: _h, ...sockets } = values;
      const c = settings(sockets);
      const { runChecks } = await import('../doctor/checks');
      const checks = await runChecks({ pluginSocket: c.socket, dockerSocket: c.dockerSocket, adminSocket: c.adminSocket });
      if (json) io.out(JSON.stringify(checks, null, 2));
      else for (const ch of checks) io.out(`${ch.verdict.padEnd(4)}  ${ch.name}: ${ch.detail}${ch.fix ? `\n      fix: ${ch.fix}` : ''}`);
      return checks.some((ch) => ch.verdict === 'FAIL') ? FAILED : 0;
    }
  }
}

function help(io: Io, sub: Subcommand): number {
  io.out(HELP[sub]);
  return 0;
}

const isSubcommand = (s: string | undefined): s is Subcommand => SUBCOMMANDS.some((c) => c === s);

/** Runs `tsnet SUBCOMMAND ...` (`argv` from the subcommand on); resolves with the exit code. */
export async function runCli(argv: string[], io: Io = stdio): Promise<number> {
  const [sub = '', ...args] = argv;
  try {
    if (!isSubcommand(sub)) throw new UsageError(`unknown subcommand "${sub.slice(0, 40)}"`);
    return await command(sub, args, io);
  } catch (err) {
    // parseArgs' own errors (unknown flag, missing value) and bad option values are usage errors.
    const usage = err instanceof UsageError || (errnoCode(err)?.startsWith('ERR_PARSE_ARGS') ?? false) || (err instanceof TsnetError && err.code === 'TSN_INVALID_OPTION');
    io.err(`tsnet: ${describeChain(err)}`);
    if (usage) io.err(`(tsnet ${isSubcommand(sub) ? sub : 'help'} --help: usage)`);
    return usage ? USAGE : FAILED;
  }
}
