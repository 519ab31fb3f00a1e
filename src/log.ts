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

/** The current call's log context (fault injection's trace names the plugin call a step belongs to). */
export function logContext(): LogContext | undefined {
  return context.getStore();
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
  // winston's Console transport is typed against another copy of TransportStream than the one it extends.
  // eslint-disable-next-line @typescript-eslint/no-unsafe-class-instance-assignment
  transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug', 'verbose', 'silly'] })],
});

/**
 * Logs without ever throwing: a line whose fields cannot be formatted is replaced by one naming the failure, and if
 * even that fails the line is dropped (a reply to dockerd matters more than a log line).
 */
export function logSafely(level: string, message: string, meta: Record<string, unknown>): void {
  try {
    log.log(level, message, meta);
  } catch (err) {
    try {
      log.log(level, message, { logError: errorExcerpt(err) });
    } catch {
      // nothing left to report it through
    }
  }
}

const EXCERPT_DEPTH = 3;
const EXCERPT_ENTRIES = 8;
const EXCERPT_STRING = 40;
const EXCERPT_LENGTH = 300;

/**
 * A bounded, JSON-like rendering of any value for logs: at most 3 levels, 8 entries per level, 40 characters per
 * string and 300 in all. Never throws (getters and proxies that throw render as `<unprintable>`), never recurses
 * deeper than the cap, so request bodies of any shape and size can be logged.
 */
export function excerpt(value: unknown): string {
  let text: string;
  try {
    text = render(value, EXCERPT_DEPTH);
  } catch {
    text = '<unprintable>';
  }
  return text.length > EXCERPT_LENGTH ? text.slice(0, EXCERPT_LENGTH - 3) + '...' : text;
}

/** A thrown value for a log line: an Error's message, anything else as {@link excerpt}, bounded either way. */
export function errorExcerpt(err: unknown): string {
  return excerpt(err instanceof Error ? err.message : err);
}

function render(v: unknown, depth: number): string {
  if (typeof v === 'string') return JSON.stringify(v.length > EXCERPT_STRING ? v.slice(0, EXCERPT_STRING) + '...' : v);
  if (v === null || typeof v !== 'object') return typeof v === 'bigint' ? `${v}n` : String(v);
  if (depth === 0) return Array.isArray(v) ? '[...]' : '{...}';
  const entries = Array.isArray(v) ? v.slice(0, EXCERPT_ENTRIES).map((x) => render(x, depth - 1)) : Object.keys(v).slice(0, EXCERPT_ENTRIES).map((k) => `${render(k, 0)}:${render(Reflect.get(v, k), depth - 1)}`);
  const total = Array.isArray(v) ? v.length : Object.keys(v).length;
  if (total > EXCERPT_ENTRIES) entries.push(`...${total - EXCERPT_ENTRIES} more`);
  return Array.isArray(v) ? `[${entries.join(',')}]` : `{${entries.join(',')}}`;
}

export function setLogLevel(level: string): void {
  log.level = level;
}

/** Milliseconds since `start` (from performance.now()), rounded to 0.01 ms for logs and bench parsing. */
export function since(start: number): number {
  return Math.round((performance.now() - start) * 100) / 100;
}
