import { AsyncLocalStorage } from 'node:async_hooks';
import winston from 'winston';

/** Ids a log line concerns. Set once per plugin call; every line logged while serving it carries them. */
export interface LogContext {
  call?: string;
  networkId?: string;
  endpointId?: string;
  poolId?: string;
}

const context = new AsyncLocalStorage<LogContext>();

/** Run `fn` with `ctx` merged into the current log context (kernel and store lines inherit the call's ids). */
export function withLogContext<T>(ctx: LogContext, fn: () => T): T {
  return context.run({ ...context.getStore(), ...ctx }, fn);
}

const addContext = winston.format((info) => {
  const ctx = context.getStore();
  if (ctx) {
    for (const [k, v] of Object.entries(ctx)) if (v !== undefined && info[k] === undefined) info[k] = v;
  }
  return info;
});

export const log = winston.createLogger({
  level: process.env.LOG_LEVEL ?? 'info',
  format: winston.format.combine(addContext(), winston.format.timestamp(), winston.format.json()),
  // stderr keeps stdout free for CLI output; dockerd's journal collects both for managed plugins.
  transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug', 'verbose', 'silly'] })],
});

export function setLogLevel(level: string): void {
  log.level = level;
}

/** Milliseconds since `start` (from performance.now()), rounded to 0.01 ms for logs and bench parsing. */
export function since(start: number): number {
  return Math.round((performance.now() - start) * 100) / 100;
}
