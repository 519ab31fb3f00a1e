import { excerpt, logSafely } from './log';

/**
 * Process-level last line of defence: tsnet holds kernel state for running containers, so a stray rejection or
 * exception in one call must not take down the plugin for all of them (dockerd would fail every later call). It is
 * logged, bounded (the value may be anything a request produced), and the process keeps serving. Returns a function
 * that removes the guard (tests).
 */
export function installProcessGuard(): () => void {
  const describe = (err: unknown) => excerpt(err instanceof Error ? `${err.name}: ${err.message}` : err);
  // The stack is ours (not request data), so a slice of it is enough to bound it.
  const stack = (err: unknown) => (err instanceof Error ? err.stack?.slice(0, 1_000) : undefined);
  const onRejection = (reason: unknown) => logSafely('error', 'unhandled rejection (tsnet keeps serving)', { error: describe(reason), stack: stack(reason) });
  const onException = (err: unknown) => logSafely('error', 'uncaught exception (tsnet keeps serving)', { error: describe(err), stack: stack(err) });
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  return () => {
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
  };
}
