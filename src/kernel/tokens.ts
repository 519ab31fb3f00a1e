import { tsnetError } from '../errors';

/**
 * Characters that end a token or a command, start a comment or a quoted string, escape, or open/close an nft block
 * in an `ip -batch` line or an `nft -f` script.
 */
const UNSAFE = /[\s#'"\\;{}]/;

/**
 * The one guard between data and the text the kernel tools parse: every interpolated value passes here. Values come
 * parsed and validated from above, so a refusal is a bug (TSN_INTERNAL), raised before anything is written.
 */
export function safeToken(value: string | number, where: string): string {
  const text = String(value);
  if (text === '' || UNSAFE.test(text)) {
    throw tsnetError(
      'TSN_INTERNAL',
      `${where}: refusing token ${JSON.stringify(text.slice(0, 80))}: empty or containing whitespace, '#', a quote, '\\', ';' or braces`,
    );
  }
  return text;
}
