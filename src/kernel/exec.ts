import { spawn } from 'node:child_process';
import { log, since } from '../log';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a program with an argument array (never through a shell) and optional stdin, resolving with its exit code
 * and output; rejects only when the program cannot be started.
 */
export function execFileInput(file: string, args: string[], input?: string): Promise<ExecResult> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => {
      const result = { code: code ?? -1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
      log.debug('exec', { cmd: [file, ...args].join(' '), code: result.code, ms: since(start) });
      resolve(result);
    });
    child.stdin.on('error', () => undefined); // the child may exit before reading all input; close reports it
    child.stdin.end(input ?? '');
  });
}
