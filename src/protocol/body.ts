/**
 * Request bodies as JSON, with a nesting cap checked before parsing: JSON.parse itself copes with deep input, but
 * everything after it (zod, logging, JSON.stringify) recurses, and no remote API body is more than a few levels deep.
 */
const MAX_BODY_DEPTH = 64;
/** The largest body read (no remote API body comes near it). */
export const MAX_BODY_BYTES = 4 * 1024 * 1024;

export type ParsedBody = { ok: true; value: unknown } | { ok: false; reason: string };

/** Whether the JSON text nests arrays/objects deeper than `cap`; one linear scan, strings skipped. */
function nestsDeeperThan(text: string, cap: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: the next character is escaped
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > cap) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

/** An empty body is `{}` (dockerd sends none for argument-less calls). */
export function parseBody(text: string): ParsedBody {
  const trimmed = text.trim();
  if (trimmed === '') return { ok: true, value: {} };
  if (nestsDeeperThan(trimmed, MAX_BODY_DEPTH)) return { ok: false, reason: `nested deeper than ${MAX_BODY_DEPTH} levels` };
  try {
    return { ok: true, value: JSON.parse(trimmed) };
  } catch {
    return { ok: false, reason: `not JSON (got ${JSON.stringify(trimmed.slice(0, 60))})` };
  }
}
