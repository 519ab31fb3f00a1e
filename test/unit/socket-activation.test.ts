import { TsnetError } from '../../src/errors';
import { inheritedSocket, takeInheritedSocket } from '../../src/socket-activation';

const PID = 4242;

function refusal(env: NodeJS.ProcessEnv): string {
  try {
    inheritedSocket(env, PID);
  } catch (err) {
    expect(err).toBeInstanceOf(TsnetError);
    expect((err as TsnetError).code).toBe('TSN_INVALID_OPTION');
    return (err as TsnetError).message;
  }
  throw new Error(`accepted ${JSON.stringify(env)}`);
}

describe('sd_listen_fds: which socket tsnet inherited', () => {
  test('none without LISTEN_FDS, or with LISTEN_FDS=0', () => {
    expect(inheritedSocket({}, PID)).toBeUndefined();
    expect(inheritedSocket({ LISTEN_PID: String(PID) }, PID)).toBeUndefined();
    expect(inheritedSocket({ LISTEN_PID: String(PID), LISTEN_FDS: '0' }, PID)).toBeUndefined();
  });

  test('none when LISTEN_PID names another process or is missing (variables inherited from an activated parent)', () => {
    expect(inheritedSocket({ LISTEN_PID: '4243', LISTEN_FDS: '1' }, PID)).toBeUndefined();
    expect(inheritedSocket({ LISTEN_FDS: '1' }, PID)).toBeUndefined();
    // Not even parsed: a bad count meant for another process is not tsnet's error.
    expect(inheritedSocket({ LISTEN_PID: '1', LISTEN_FDS: 'x' }, PID)).toBeUndefined();
  });

  test('one socket is fd 3, with its LISTEN_FDNAMES name when given', () => {
    expect(inheritedSocket({ LISTEN_PID: String(PID), LISTEN_FDS: '1' }, PID)).toEqual({ fd: 3 });
    expect(inheritedSocket({ LISTEN_PID: String(PID), LISTEN_FDS: '1', LISTEN_FDNAMES: 'tsnet.socket' }, PID)).toEqual({ fd: 3, name: 'tsnet.socket' });
    expect(inheritedSocket({ LISTEN_PID: String(PID), LISTEN_FDS: '1', LISTEN_FDNAMES: '' }, PID)).toEqual({ fd: 3 });
  });

  test('more than one socket is refused, naming the count', () => {
    expect(refusal({ LISTEN_PID: String(PID), LISTEN_FDS: '2', LISTEN_FDNAMES: 'a:b' })).toMatch(/passed 2 sockets; tsnet serves one/);
  });

  test('a count that is not a number is refused, quoting it (cut)', () => {
    expect(refusal({ LISTEN_PID: String(PID), LISTEN_FDS: '-1' })).toMatch(/LISTEN_FDS is not a count of sockets \(got "-1"\)/);
    expect(refusal({ LISTEN_PID: String(PID), LISTEN_FDS: '1'.repeat(100) })).toContain(`"${'1'.repeat(16)}"`);
    expect(refusal({ LISTEN_PID: String(PID), LISTEN_FDS: ' 1' })).toMatch(/not a count/);
  });
});

describe('takeInheritedSocket', () => {
  const saved = { ...process.env };
  afterEach(() => {
    process.env = { ...saved };
  });

  test("reads this process's variables and removes them, so commands tsnet runs do not inherit them", () => {
    process.env.LISTEN_PID = String(process.pid);
    process.env.LISTEN_FDS = '1';
    process.env.LISTEN_FDNAMES = 'tsnet';
    expect(takeInheritedSocket()).toEqual({ fd: 3, name: 'tsnet' });
    expect([process.env.LISTEN_PID, process.env.LISTEN_FDS, process.env.LISTEN_FDNAMES]).toEqual([undefined, undefined, undefined]);
    expect(takeInheritedSocket()).toBeUndefined();
  });

  test("removes another process's variables too", () => {
    process.env.LISTEN_PID = String(process.pid + 1);
    process.env.LISTEN_FDS = '1';
    expect(takeInheritedSocket()).toBeUndefined();
    expect(process.env.LISTEN_FDS).toBeUndefined();
  });
});
