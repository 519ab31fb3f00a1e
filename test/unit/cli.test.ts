import os from 'node:os';
import path from 'node:path';
import type { PortEntry, StatusReport } from '../../src/admin/contract';
import { runCli } from '../../src/cli';
import { dockerPortLine, formatPorts, formatReconcile, formatStatus } from '../../src/cli/format';

const port = (over: Partial<PortEntry>): PortEntry => ({ endpointId: 'e'.repeat(64), networkId: 'n'.repeat(64), proto: 'tcp', containerPort: 80, containerIp: '172.28.5.2', hostPort: 8080, ...over });

describe('tsnet ports: docker port format', () => {
  test('one binding per line: PORT/PROTO -> HOST:PORT, IPv6 in brackets, every address when none was named', () => {
    expect(dockerPortLine(port({}))).toBe('80/tcp -> 0.0.0.0:8080');
    expect(dockerPortLine(port({ hostIp: '127.0.0.1', proto: 'udp', containerPort: 53, hostPort: 5353 }))).toBe('53/udp -> 127.0.0.1:5353');
    expect(dockerPortLine(port({ containerIp: 'fd00::2' }))).toBe('80/tcp -> [::]:8080');
    expect(dockerPortLine(port({ hostIp: '2001:db8::1', containerIp: 'fd00::2', proto: 'sctp' }))).toBe('80/sctp -> [2001:db8::1]:8080');
  });

  test("one container: docker port's lines in its order (port, protocol, IPv4 before IPv6)", () => {
    const ports = [port({ containerPort: 443, hostPort: 8443 }), port({ containerIp: 'fd00::2' }), port({ proto: 'udp' }), port({})];
    expect(formatPorts(ports, true)).toEqual(['80/tcp -> 0.0.0.0:8080', '80/tcp -> [::]:8080', '80/udp -> 0.0.0.0:8080', '443/tcp -> 0.0.0.0:8443']);
  });

  test('every container: each line led by the container name, or the endpoint id when Docker did not name it', () => {
    const ports = [port({ containerName: 'web', containerPort: 443, hostPort: 8443 }), port({ containerName: 'db', containerPort: 5432, hostPort: 5432 }), port({ containerName: 'web' }), port({ endpointId: '0123456789abcdef' })];
    expect(formatPorts(ports, false)).toEqual([
      '0123456789ab  80/tcp -> 0.0.0.0:8080',
      'db            5432/tcp -> 0.0.0.0:5432',
      'web           80/tcp -> 0.0.0.0:8080',
      'web           443/tcp -> 0.0.0.0:8443',
    ]);
  });
});

describe('tsnet status and reconcile formatting', () => {
  test('status: a header line, then a network and an endpoint table', () => {
    const s: StatusReport = {
      version: '0.1.0',
      ready: true,
      uptimeS: 3725,
      store: { ok: true, ms: 0.1 },
      networks: [{ id: 'a'.repeat(64), mode: 'bridge', link: 'tsb-aaaa', subnets: ['172.28.0.0/16'], internal: false, endpoints: 1, poolUse: { used: 2, size: '65536' }, pending: false }],
      endpoints: [{ id: 'b'.repeat(64), networkId: 'a'.repeat(64), addresses: ['172.28.5.2/16'], mac: '02:42:ac:1c:05:02', link: 'tsvbbbb', joined: true, ports: 1, pending: false }],
      pools: [],
    };
    expect(formatStatus(s).split('\n')).toEqual([
      'tsnet 0.1.0, ready, up 1h2m5s, store ok (0.1 ms)',
      '',
      'NETWORK       MODE    LINK      SUBNETS        ENDPOINTS  POOL USE',
      'aaaaaaaaaaaa  bridge  tsb-aaaa  172.28.0.0/16  1          2/65536',
      '',
      'ENDPOINT      NETWORK       ADDRESSES      MAC                LINK     JOINED  PORTS',
      'bbbbbbbbbbbb  aaaaaaaaaaaa  172.28.5.2/16  02:42:ac:1c:05:02  tsvbbbb  yes     1',
    ]);
  });

  test('reconcile: the plan or what was applied, one repair a line', () => {
    expect(formatReconcile({ applied: false, repairs: [] })).toEqual(['nothing to repair: the host matches the records']);
    expect(formatReconcile({ applied: false, repairs: [{ kind: 'endpoint-changes', description: 'endpoint x: create veth a/b' }] })).toEqual(['1 repair(s) planned (dry run, nothing changed):', '  endpoint x: create veth a/b']);
    expect(formatReconcile({ applied: true, repairs: [{ kind: 'orphan', description: 'delete y' }] })[0]).toBe('applied 1 repair(s):');
  });
});

describe('tsnet CLI exit codes', () => {
  async function cli(argv: string[]) {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runCli(argv, { out: (l) => out.push(l), err: (l) => err.push(l) });
    return { code, out: out.join('\n'), err: err.join('\n') };
  }
  const nowhere = path.join(os.tmpdir(), `tsnet-no-daemon-${process.pid}.sock`);

  test.each(['status', 'ports', 'reconcile', 'doctor', 'help'])('%s --help: usage, exit 0', async (sub) => {
    const r = await cli([sub, '--help']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^usage: tsnet/);
  });

  test('usage errors exit 2: unknown subcommand or flag, a second CONTAINER, a bad config file', async () => {
    expect((await cli(['stauts'])).code).toBe(2);
    expect(await cli(['status', '--bogus'])).toMatchObject({ code: 2, err: expect.stringContaining("'--bogus'") });
    expect((await cli(['ports', 'a', 'b', '--admin-socket', nowhere])).code).toBe(2);
    expect(await cli(['status', '--config', path.join(os.tmpdir(), 'tsnet-missing-config.json')])).toMatchObject({ code: 2, err: expect.stringContaining('cannot be read') });
  });

  test('a daemon that is down: exit 1 saying so', async () => {
    const r = await cli(['status', '--admin-socket', nowhere]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('is the daemon running?');
  });
});
