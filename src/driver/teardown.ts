import { TsnetError, tsnetError } from '../errors';
import { type Kernel, type KernelChange, KernelChangeError } from '../kernel/contract';
import { log } from '../log';

const ALREADY_GONE = /Cannot find device|does not exist|Cannot assign requested address|No such device|No such process/;

/**
 * Applies changes in one batch, and when one fails asks `tolerate` whether to skip it and go on with the rest;
 * an untolerated failure is thrown.
 */
export async function applyTolerant(kernel: Kernel, changes: KernelChange[], tolerate: (err: KernelChangeError) => boolean): Promise<void> {
  let todo = changes;
  while (todo.length > 0) {
    try {
      await kernel.apply(todo);
      return;
    } catch (err) {
      if (!(err instanceof KernelChangeError) || !tolerate(err)) throw err;
      todo = todo.slice(err.index + 1);
    }
  }
}

/** The kernel says what a removal would remove is not there. */
export function isAlreadyGone(err: KernelChangeError): boolean {
  return ALREADY_GONE.test(err.message);
}

/**
 * Removal changes with "already gone" counted as done: teardown is idempotent because dockerd replays deletes at
 * boot and a crash may have removed half.
 */
export function applyRemovals(kernel: Kernel, changes: KernelChange[]): Promise<void> {
  return applyTolerant(kernel, changes, (err) => {
    const gone = isAlreadyGone(err);
    if (gone) log.debug('already removed', { change: err.change });
    return gone;
  });
}

/**
 * Teardown's one error boundary (setup's is runSteps): whatever kernel or firewall work `fn` throws reaches the
 * caller as TSN_KERNEL naming `what`, with the original error as its cause.
 */
export async function tearDown<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw err instanceof TsnetError ? err : tsnetError('TSN_KERNEL', `${what} failed`, err);
  }
}
