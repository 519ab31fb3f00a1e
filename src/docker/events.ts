/**
 * Docker's `/events` stream: newline-delimited JSON that may arrive split anywhere across chunks. Lines are bounded
 * and parsed with zod; a bad line is counted and skipped, never fatal. Also the reconnect {@link Backoff}.
 */
import { z } from 'zod';
import type { DockerClient } from './client';

/** Longer lines are dropped (a real event is a few hundred bytes; labels can make it a few KiB). */
const MAX_EVENT_LINE_BYTES = 256 * 1024;

/** What tsnet follows: the container and network actions that change a name or an address. */
const EVENT_FILTERS: Record<string, string[]> = {
  type: ['container', 'network'],
  event: ['start', 'die', 'destroy', 'rename', 'create', 'connect', 'disconnect'],
};

export type EventKind = 'container' | 'network';

export interface DockerEvent {
  type: EventKind;
  action: string;
  /** Container ID, or network ID for network events. */
  actorId: string;
  /** For network connect/disconnect: the container's ID. */
  container?: string;
  /** Seconds since the epoch, as `since=` takes it. */
  time: number;
}

const eventSchema = z.object({
  Type: z.string(),
  Action: z.string(),
  Actor: z.object({ ID: z.string(), Attributes: z.record(z.string(), z.string()).nullish() }),
  time: z.number().int().nonnegative(),
});

/** One line of the stream as an event; undefined for a line that is not one (or of a type tsnet ignores). */
export function parseEventLine(line: string): DockerEvent | undefined {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return undefined;
  }
  const r = eventSchema.safeParse(json);
  if (!r.success) return undefined;
  const e = r.data;
  if (e.Type !== 'container' && e.Type !== 'network') return undefined;
  const ev: DockerEvent = { type: e.Type, action: e.Action, actorId: e.Actor.ID, time: e.time };
  const container = e.Actor.Attributes?.container;
  if (container !== undefined) ev.container = container;
  return ev;
}

/**
 * Splits a byte stream into lines of at most `maxBytes` (without the newline). An overlong line is dropped whole
 * (everything up to its newline) and reported through `onOverlong`, so memory stays bounded whatever the peer sends.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  private discarding = false;

  constructor(
    private readonly maxBytes: number,
    private readonly onLine: (line: string) => void,
    private readonly onOverlong: () => void,
  ) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl < 0 ? chunk.length : nl;
      if (!this.discarding) {
        if (this.size + (end - start) > this.maxBytes) {
          this.discarding = true;
          this.parts = [];
          this.size = 0;
          this.onOverlong();
        } else if (end > start) {
          this.parts.push(chunk.subarray(start, end));
          this.size += end - start;
        }
      }
      if (nl < 0) return;
      if (!this.discarding) {
        const line = Buffer.concat(this.parts, this.size).toString('utf8');
        this.parts = [];
        this.size = 0;
        if (line.trim() !== '') this.onLine(line);
      }
      this.discarding = false;
      start = nl + 1;
    }
  }
}

export interface EventStream {
  /** Settles when the daemon ends the stream or it fails: with the reason, never rejecting. */
  readonly ended: Promise<Error>;
  /** Lines that were not events (malformed, overlong, unknown shape) so far. */
  badLines(): number;
}

/**
 * Opens `/events` (filters {@link EVENT_FILTERS}, `since` if given) and resolves once the daemon answered; each
 * event is then passed to `onEvent` as it arrives. `signal` ends the stream.
 */
export async function openEventStream(client: DockerClient, since: number | undefined, signal: AbortSignal, onEvent: (e: DockerEvent) => void): Promise<EventStream> {
  const res = await client.openEvents(EVENT_FILTERS, since === undefined ? undefined : String(since), signal);
  let bad = 0;
  const splitter = new LineSplitter(
    MAX_EVENT_LINE_BYTES,
    (line) => {
      const e = parseEventLine(line);
      if (e) onEvent(e);
      else bad++;
    },
    () => {
      bad++;
    },
  );
  const ended = new Promise<Error>((resolve) => {
    res.on('data', (chunk: Buffer) => {
      splitter.push(chunk);
    });
    res.on('end', () => {
      resolve(new Error('Docker ended the event stream'));
    });
    res.on('error', (err) => {
      resolve(err);
    });
    res.on('close', () => {
      resolve(new Error('the event stream closed'));
    });
  });
  return { ended, badLines: () => bad };
}

/** Exponential backoff with jitter: the n-th delay is drawn from [d/2, d] with d = min(cap, initial × 2ⁿ). */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly initialMs: number,
    private readonly capMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const d = Math.min(this.capMs, this.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.round(d / 2 + (this.random() * d) / 2);
  }

  reset(): void {
    this.attempt = 0;
  }
}
