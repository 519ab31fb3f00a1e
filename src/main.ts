/**
 * tsnet's entry: turns on Node's compile cache, then boots (src/boot.ts), or loads the CLI for `tsnet status|ports|
 * reconcile|doctor|help` (src/cli/). Compiling express, zod and winston is a
 * good part of start-up. The cache sits beside the code it was compiled from (`dist/`), so it is
 * exactly as trusted as that code; never a shared tmp dir, whose planted entries a root process would run. Where it
 * cannot be written (a read-only install), tsnet starts as before, only slower.
 */
import module from 'node:module';
import path from 'node:path';

module.enableCompileCache(path.join(__dirname, '.compile-cache'));
/** Kept here, not imported from src/cli/: the daemon's boot must not load the CLI. */
const SUBCOMMANDS = new Set(['status', 'ports', 'reconcile', 'doctor', 'help']);
const sub = process.argv[2];
// `tsnet daemon ...` is the daemon too; the boot reads its flags from process.argv.
if (sub === 'daemon') process.argv.splice(2, 1);
const load: Promise<unknown> = SUBCOMMANDS.has(sub) ? import('./cli').then(async ({ runCli }) => (process.exitCode = await runCli(process.argv.slice(2)))) : import('./boot');
// The boot logs its own failures; this catches only one to load it at all.
load.catch((err: unknown) => {
  process.stderr.write(`tsnet failed to load: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
