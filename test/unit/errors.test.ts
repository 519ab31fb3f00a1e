import { asTsnetError, describeChain, tsnetError } from '../../src/errors';

test('a thrown non-Error object is described by its content, not as "[object Object]"', () => {
  const thrown = { code: 'EBUSY', errno: -16 };
  expect(asTsnetError(thrown).message).toBe("{ code: 'EBUSY', errno: -16 }");
  expect(describeChain(tsnetError('TSN_STORE', 'cannot commit', thrown))).toBe("cannot commit: { code: 'EBUSY', errno: -16 }");
});

test('a thrown string stays as it is, and a huge thrown value is cut short', () => {
  expect(asTsnetError('boom').message).toBe('boom');
  expect(asTsnetError({ big: 'x'.repeat(100_000) }).message.length).toBeLessThan(400);
});
