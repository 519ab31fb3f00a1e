/**
 * tsnet's entry: turns on Node's compile cache, then boots (src/boot.ts). Compiling express, zod and winston is a
 * good part of start-up. The cache sits beside the code it was compiled from (`dist/`), so it is
 * exactly as trusted as that code; never a shared tmp dir, whose planted entries a root process would run. Where it
 * cannot be written (a read-only install), tsnet starts as before, only slower.
 */
import module from 'node:module';
import path from 'node:path';

module.enableCompileCache(path.join(__dirname, '.compile-cache'));
// The boot logs its own failures; this catches only one to load it at all.
import('./boot').catch((err: unknown) => {
  process.stderr.write(`tsnet failed to load: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
