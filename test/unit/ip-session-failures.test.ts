import { TsnetError } from '../../src/errors';
import { IpBatchSession } from '../../src/kernel/ip-session';

/**
 * How the `ip -batch` session survives a missing or misbehaving ip. No real ip runs here: a node script stands in
 * for it, answering the marker command like ip does and misbehaving on command.
 */
const FAKE_IP = `
const rl = require('node:readline').createInterface({ input: process.stdin });
let n = 0;
let hung = false;
rl.on('line', (l) => {
  n++;
  if (hung) return;
  if (l === 'link show dev lo') process.stdout.write('1: lo: <LOOPBACK,UP> mtu 65536\\n');
  else if (l === 'die') process.exit(3);
  else if (l === 'fail') { process.stderr.write('RTNETLINK answers: File exists\\nCommand failed -:' + n + '\\n'); process.exit(1); }
  else if (l === 'hang') hung = true;
});
`;
/** Only the test of an ip that never answers needs a short batch timeout; the others keep the default. */
const fakeIp = (timeoutMs?: number) => new IpBatchSession([process.execPath, '-e', FAKE_IP, '--'], timeoutMs);

const kernelError = expect.objectContaining({ code: 'TSN_KERNEL' }) as unknown as TsnetError;

let sessions: IpBatchSession[] = [];
const track = (s: IpBatchSession) => (sessions.push(s), s);
afterEach(() => {
  for (const s of sessions) s.close();
  sessions = [];
});

test('a program that cannot be started fails the batch with TSN_KERNEL (no crash), and so does the next one', async () => {
  const s = track(new IpBatchSession(['/nonexistent/ip']));
  await expect(s.run(['link add name x type bridge'])).rejects.toEqual(kernelError);
  await expect(s.run(['link add name y type bridge'])).rejects.toEqual(kernelError);
});

test('concurrent batches queued behind a spawn failure all end with TSN_KERNEL', async () => {
  const s = track(new IpBatchSession(['/nonexistent/ip']));
  const results = await Promise.allSettled([s.run(['a']), s.run(['b']), s.run(['c'])]);
  expect(results.map((r) => (r.status === 'rejected' ? (r.reason as TsnetError).code : r.status))).toEqual(['TSN_KERNEL', 'TSN_KERNEL', 'TSN_KERNEL']);
});

test('the stand-in answers like ip: success, and a failing line named by index', async () => {
  const s = track(fakeIp());
  expect(await s.run(['ok', 'ok'])).toBeUndefined();
  expect(await s.run(['ok', 'fail', 'ok'])).toEqual({ index: 1, reason: 'RTNETLINK answers: File exists' });
  expect(await s.run(['ok'])).toBeUndefined();
});

test('ip dying mid-batch fails that batch with TSN_KERNEL; the next batch runs in a fresh process', async () => {
  const s = track(fakeIp());
  expect(await s.run(['ok'])).toBeUndefined();
  await expect(s.run(['ok', 'die', 'ok'])).rejects.toEqual(kernelError);
  expect(await s.run(['ok'])).toBeUndefined();
});

test('ip that stops reading and never answers fails the batch with TSN_KERNEL; the next batch runs in a fresh process', async () => {
  const s = track(fakeIp(2_000));
  await expect(s.run(['hang'])).rejects.toEqual(kernelError);
  expect(await s.run(['ok'])).toBeUndefined();
});
