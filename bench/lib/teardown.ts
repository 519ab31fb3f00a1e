/** Teardown pieces shared by the bench runs: steps that each run whatever failed before, and bringing daemons back. */
import type { Dockerd } from '../../test/harness/dockerd';
import { sleep } from '../../test/harness/exec';
import { pluginCall, type TsnetProcess } from '../../test/harness/tsnet';
import { abortedBy } from './abort';

export interface Steps {
  /** One line per failed step: what, and the first line of its error. */
  errors: string[];
  step: (what: string, fn: () => unknown) => Promise<void>;
}

/** Every step runs even if an earlier one failed; errors are collected. */
export function teardownSteps(): Steps {
  const errors: string[] = [];
  const step = async (what: string, fn: () => unknown): Promise<void> => {
    try {
      await fn();
    } catch (e) {
      errors.push(`${what}: ${(e as Error).message.split('\n')[0]}`);
    }
  };
  return { errors, step };
}

/**
 * After SIGINT/SIGTERM: a terminal's Ctrl-C reaches the whole process group, dockerd and tsnet included, so they may
 * be on their way out. Stops both for a known state; what they made is then removed by starting them again
 * ({@link reviveDaemons}).
 */
export async function stopAfterAbort({ step }: Steps, dockerd: Dockerd | undefined, tsnet: TsnetProcess | undefined): Promise<void> {
  if (!abortedBy()) return;
  await sleep(500);
  if (tsnet) await step('stop tsnet after abort', () => tsnet.stop());
  if (dockerd) await step('stop dockerd after abort', () => dockerd.stop());
}

/** Alive means answering: a process killed a moment ago may not have been reaped yet. */
export const tsnetAnswers = async (t: TsnetProcess): Promise<boolean> =>
  t.pid !== undefined &&
  (await pluginCall(t.socket, 'Plugin.Activate', {}, 3_000).then(
    (r) => r.status === 200,
    () => false,
  ));

const dockerdAnswers = async (d: Dockerd): Promise<boolean> =>
  d.pid !== undefined &&
  (await d.docker.dockerTry(['version'], { timeoutMs: 10_000 }).then(
    (r) => r.code === 0,
    () => false,
  ));

/**
 * A dead tsnet (when it still has something to remove) or dockerd is started again on the same state dir /
 * data-root: tsnet's reconciliation and dockerd's deletes then remove what was made.
 */
export async function reviveDaemons(
  { step }: Steps,
  dockerd: Dockerd | undefined,
  tsnet: TsnetProcess | undefined,
  tsnetHasWork: boolean,
): Promise<void> {
  if (tsnet && tsnetHasWork && !(await tsnetAnswers(tsnet))) {
    await step('restart tsnet', async () => {
      await tsnet.kill9();
      await tsnet.start();
    });
  }
  if (dockerd && !(await dockerdAnswers(dockerd))) {
    await step('restart dockerd', async () => {
      await dockerd.kill9();
      await dockerd.start();
    });
  }
}
