import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_DOCKER_SOCKET, loadConfig, parseUpstream, type Config } from '../../src/config';
import { TsnetError } from '../../src/errors';

function load(argv: string[], env: Record<string, string> = {}): Config {
  const saved = process.env;
  process.env = { ...Object.fromEntries(Object.entries(saved).filter(([k]) => !k.startsWith('TSNET_') && k !== 'DOCKER_HOST')), ...env };
  try {
    const c = loadConfig(argv);
    if (c === 'help') throw new Error('unexpected help');
    return c;
  } finally {
    process.env = saved;
  }
}

function refusal(argv: string[], env: Record<string, string> = {}): string {
  try {
    load(argv, env);
  } catch (err) {
    expect(err).toBeInstanceOf(TsnetError);
    expect((err as TsnetError).code).toBe('TSN_INVALID_OPTION');
    return (err as TsnetError).message;
  }
  throw new Error(`accepted ${argv.join(' ')}`);
}

describe('DNS and Docker options', () => {
  test('defaults: listeners on every bridge gateway, port 53, zone tsnet, upstreams from /etc/resolv.conf', () => {
    const { dns, dockerSocket } = load([]);
    expect(dns).toEqual({
      enabled: true,
      zone: 'tsnet',
      port: 53,
      onGateways: true,
      hostAddresses: [],
      onInternal: false,
      upstreams: 'resolv.conf',
      resolvConf: '/etc/resolv.conf',
      ttl: 5,
    });
    expect(dockerSocket).toBe(DEFAULT_DOCKER_SOCKET);
  });

  test('flags: host addresses replace the gateway default unless gateways is named; zone normalised', () => {
    const only = load(['--dns-listen', '10.9.8.7', '--dns-listen', 'fd00::53', '--dns-zone', 'Dns.Example.ORG.', '--dns-port', '5353']).dns;
    expect(only).toMatchObject({ onGateways: false, hostAddresses: ['10.9.8.7', 'fd00::53'], zone: 'dns.example.org', port: 5353 });
    expect(load(['--dns-listen', 'gateways', '--dns-listen', '10.9.8.7']).dns).toMatchObject({ onGateways: true, hostAddresses: ['10.9.8.7'] });
    expect(load(['--dns-listen', 'none']).dns.enabled).toBe(false);
    expect(load(['--dns-internal']).dns.onInternal).toBe(true);
  });

  test('environment: comma lists and DOCKER_HOST=unix://', () => {
    const c = load([], { TSNET_DNS_LISTEN: 'gateways, 10.1.2.3', TSNET_DNS_UPSTREAMS: '10.0.0.2:5300,[fd00::1]:53', DOCKER_HOST: 'unix:///run/d.sock' });
    expect(c.dns.hostAddresses).toEqual(['10.1.2.3']);
    expect(c.dns.upstreams).toEqual([
      { address: '10.0.0.2', port: 5300 },
      { address: 'fd00::1', port: 53 },
    ]);
    expect(c.dockerSocket).toBe('/run/d.sock');
    // A flag wins over the environment.
    expect(load(['--docker-socket', '/x/docker.sock'], { DOCKER_HOST: 'unix:///run/d.sock' }).dockerSocket).toBe('/x/docker.sock');
  });

  test('upstreams: none turns forwarding off; forms ADDR, ADDR:PORT, bare IPv6, [IPv6]:PORT', () => {
    expect(load(['--dns-upstream', 'none']).dns.upstreams).toEqual([]);
    expect(parseUpstream('127.0.0.53')).toEqual({ address: '127.0.0.53', port: 53 });
    expect(parseUpstream('fd00::53')).toEqual({ address: 'fd00::53', port: 53 });
    expect(parseUpstream('[fd00::53]:5353')).toEqual({ address: 'fd00::53', port: 5353 });
  });

  test.each([
    [['--dns-listen', 'none', '--dns-listen', '10.0.0.1'], 'dns-listen "none,10.0.0.1"'],
    [['--dns-listen', 'eth0'], 'dns-listen "eth0"'],
    [['--dns-listen', '0.0.0.0'], 'dns-listen "0.0.0.0": name the addresses'],
    [['--dns-listen', '::'], 'dns-listen "::": name the addresses'],
    [['--dns-listen', '0:0::0'], 'dns-listen "0:0::0": name the addresses'],
    [['--dns-port', '0'], 'dns-port "0"'],
    [['--dns-port', '53x'], 'dns-port "53x"'],
    [['--dns-ttl=-1'], 'dns-ttl "-1"'],
    [['--dns-zone', 'bad_zone'], 'dns-zone "bad_zone"'],
    [['--dns-zone', 'a..b'], 'dns-zone "a..b"'],
    [['--dns-upstream', 'none', '--dns-upstream', '10.0.0.1'], 'dns-upstream "none,10.0.0.1"'],
    [['--dns-upstream', 'resolver.example'], 'dns-upstream "resolver.example"'],
    [['--dns-upstream', '10.0.0.1:99999'], 'dns-upstream port "99999"'],
  ])('refuses %j naming the option and value', (argv, named) => {
    expect(refusal(argv)).toContain(named);
  });

  test('refuses a DOCKER_HOST that is not a unix socket', () => {
    expect(refusal([], { DOCKER_HOST: 'tcp://10.0.0.1:2375' })).toContain('DOCKER_HOST "tcp://10.0.0.1:2375"');
  });
});

describe('reclaim grace', () => {
  test('default 60 s; flag wins over TSNET_RECLAIM_GRACE; seconds become ms', () => {
    expect(load([]).reclaimGraceMs).toBe(60_000);
    expect(load([], { TSNET_RECLAIM_GRACE: '5' }).reclaimGraceMs).toBe(5_000);
    expect(load(['--reclaim-grace', '0'], { TSNET_RECLAIM_GRACE: '5' }).reclaimGraceMs).toBe(0);
  });

  test.each([['-1'], ['1.5'], ['86401'], ['soon']])('refuses --reclaim-grace=%s naming the value', (v) => {
    expect(refusal([`--reclaim-grace=${v}`])).toContain(`reclaim-grace "${v}"`);
  });
});

describe('config file', () => {
  let dir: string;
  beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsnet-config-'))));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, content: unknown) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, typeof content === 'string' ? content : JSON.stringify(content));
    return p;
  };

  test('keys are long flag names; numbers, lists and booleans are taken', () => {
    const f = file('ok.json', { 'state-dir': '/srv/tsnet', 'dns-port': 5353, 'dns-upstream': '192.0.2.1', 'dns-listen': ['192.0.2.7'], 'dns-internal': true, 'admin-socket': '/run/x/admin.sock' });
    const c = load(['--config', f]);
    expect(c.stateDir).toBe('/srv/tsnet');
    expect(c.adminSocket).toBe('/run/x/admin.sock');
    expect(c.dns.port).toBe(5353);
    expect(c.dns.upstreams).toEqual([{ address: '192.0.2.1', port: 53 }]);
    expect(c.dns.hostAddresses).toEqual(['192.0.2.7']);
    expect(c.dns.onInternal).toBe(true);
  });

  test('precedence: flags over TSNET_* env over the file over the defaults', () => {
    const f = file('layers.json', { 'state-dir': '/from/file', socket: '/from/file.sock', 'nft-table': 'fromfile', 'dns-listen': ['192.0.2.9'] });
    const viaEnv = { TSNET_CONFIG: f, TSNET_STATE_DIR: '/from/env', TSNET_SOCKET: '/from/env.sock', TSNET_DNS_LISTEN: '192.0.2.8' };
    const c = load(['--state-dir', '/from/flag'], viaEnv);
    expect(c.stateDir).toBe('/from/flag');
    expect(c.socket).toBe('/from/env.sock');
    expect(c.nftTable).toBe('fromfile');
    expect(c.dns.hostAddresses).toEqual(['192.0.2.8']);
    expect(c.adminSocket).toBe('/run/tsnet/admin.sock');
    // --config wins over TSNET_CONFIG.
    expect(load(['--config', file('other.json', { 'nft-table': 'other' })], viaEnv).nftTable).toBe('other');
  });

  test('a value from the file is checked like the flag', () => {
    expect(refusal(['--config', file('bad-port.json', { 'dns-port': 70000 })])).toMatch(/dns-port "70000"/);
  });

  test('an unknown key, a wrong type, bad JSON or a missing named file is refused naming it', () => {
    expect(refusal(['--config', file('unknown.json', { 'state-dri': '/x' })])).toMatch(/unknown key "state-dri"/);
    expect(refusal(['--config', file('type.json', { 'dns-internal': 'yes' })])).toMatch(/key "dns-internal" = "yes": expected true or false/);
    expect(refusal(['--config', file('list.json', { 'dns-upstream': [1, {}] })])).toMatch(/key "dns-upstream" = \[1,\{\}\]: expected a string or an array/);
    expect(refusal(['--config', file('help.json', { help: true })])).toMatch(/unknown key "help"/);
    expect(refusal(['--config', file('broken.json', '{"state-dir": ')])).toMatch(/not JSON/);
    expect(refusal(['--config', file('array.json', ['state-dir'])])).toMatch(/expected a JSON object/);
    expect(refusal(['--config', path.join(dir, 'missing.json')])).toMatch(/missing\.json: cannot be read/);
  });
});

describe('managed plugin options', () => {
  test('the driver name is the socket file name unless told: a managed plugin is known by its reference', () => {
    expect(load([]).driverName).toBe('tsnet');
    expect(load(['--socket', '/run/docker/plugins/tsnet-e2e.sock']).driverName).toBe('tsnet-e2e');
    // A managed plugin's socket is always tsnet.sock; dockerd names it by reference.
    expect(load([], { TSNET_DRIVER_NAME: '127.0.0.1:5000/tsnet:latest' }).driverName).toBe('127.0.0.1:5000/tsnet:latest');
    expect(load(['--driver-name', 'tsnet:v2'], { TSNET_DRIVER_NAME: 'other:latest' }).driverName).toBe('tsnet:v2');
    // docker plugin set leaves an unset setting empty: the default applies.
    expect(load(['--socket', '/run/x/n1.sock'], { TSNET_DRIVER_NAME: '' }).driverName).toBe('n1');
  });

  test('refuses a driver name that is no plugin reference', () => {
    expect(refusal(['--driver-name', 'tsnet latest'])).toMatch(/driver-name/);
    expect(refusal([], { TSNET_DRIVER_NAME: '-x' })).toMatch(/driver-name/);
  });

  test('sysctl root: /proc/sys by default, the host /proc mounted elsewhere when told', () => {
    expect(load([]).sysctlRoot).toBe('/proc/sys');
    expect(load([], { TSNET_SYSCTL_ROOT: '/host/proc/sys' }).sysctlRoot).toBe('/host/proc/sys');
    expect(load(['--sysctl-root', '/h/proc/sys/'], { TSNET_SYSCTL_ROOT: '/x' }).sysctlRoot).toBe('/h/proc/sys');
    expect(load([], { TSNET_SYSCTL_ROOT: '' }).sysctlRoot).toBe('/proc/sys');
  });
});
