import { PassThrough } from 'node:stream';
import winston from 'winston';
import { log } from '../../src/log';

/**
 * Turns tsnet's logger on (at `level`) into a buffer instead of the console, for tests that check what is logged;
 * `restore` puts the quiet test default back.
 */
export function captureLogs(level = 'info'): { lines: string[]; restore: () => void } {
  const lines: string[] = [];
  const stream = new PassThrough();
  stream.on('data', (d: Buffer) => lines.push(d.toString()));
  const sink = new winston.transports.Stream({ stream });
  const others = [...log.transports];
  for (const t of others) t.silent = true;
  // winston's transports are typed against another copy of TransportStream than the one they extend.
  // eslint-disable-next-line @typescript-eslint/no-unsafe-class-instance-assignment
  log.add(sink);
  log.silent = false;
  log.level = level;
  return {
    lines,
    restore: () => {
      // eslint-disable-next-line @typescript-eslint/no-unsafe-class-instance-assignment
      log.remove(sink);
      for (const t of others) t.silent = false;
      log.silent = !process.env.TEST_LOG;
      log.level = 'info';
    },
  };
}
