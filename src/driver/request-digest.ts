import { createHash } from 'node:crypto';

/**
 * What a create request was, kept on its record so a repeat can be told from a different request with the same id
 * (dockerd retries a call it got no answer to). One short SHA-256 per top-level field of the validated request, so a
 * refusal can name the fields that differ without storing or echoing the request itself.
 */

/** An object's defined entries, sorted by key. */
function sortedEntries(value: object): Array<[string, unknown]> {
  return Object.entries(value)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** JSON with object keys sorted at every depth: equal values give equal text whatever order dockerd sent keys in. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${sortedEntries(value).map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

const hash = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 16);

/** `field=hash` per top-level field, sorted by field: equal strings mean equal requests. */
export function requestDigest(req: object): string {
  return sortedEntries(req)
    .map(([k, v]) => `${k}=${hash(canonical(v))}`)
    .join(' ');
}

const fields = (digest: string) => new Map(digest.split(' ').map((f) => [f.slice(0, f.indexOf('=')), f.slice(f.indexOf('=') + 1)]));

/** The fields (of either request) whose values differ between two digests. */
export function differingFields(a: string, b: string): string[] {
  const x = fields(a);
  const y = fields(b);
  return [...new Set([...x.keys(), ...y.keys()])].filter((k) => x.get(k) !== y.get(k)).sort();
}
