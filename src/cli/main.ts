#!/usr/bin/env -S node --initial-old-space-size=64
/** The `ferry` command. Each subcommand lives in its own module under commands/, loaded only when used. */
// --initial-old-space-size=64 (the shebang): V8's old-generation limit otherwise restarts just
// above the live heap (~22 MB) after every full collection (its own when idle, or the part
// buffer pool's release in storage/s3-piece-cache.ts), and the next 100 MiB pushes on S3 then
// ran 4-6 full collections each, doubling their CPU (docs/storage.md, fifth round). A floor of
// 64 MB keeps that to ~1 per push and costs at most ~40 MB of heap.
import { Command, CommanderError } from "commander";
import { registerCommands } from "./commands/index.js";
import { VERSION } from "./version.js";

const program = new Command();
program
  .name("ferry")
  .description("Ferry: an OCI registry with layer federation, and its client")
  .version(VERSION)
  .showHelpAfterError();

async function main(): Promise<void> {
  const first = process.argv[2];
  // --version needs no command module at all.
  if (first !== "-V" && first !== "--version") await registerCommands(program, first);
  // Top-level usage errors (unknown command) exit 2, like the client commands' (see client.ts).
  program.exitOverride();
  await program.parseAsync(process.argv);
}

main().catch((error: unknown) => {
  if (error instanceof CommanderError) {
    // Commander already printed the message; help and --version are not failures.
    process.exit(error.exitCode === 0 ? 0 : 2);
  }
  process.stderr.write(`ferry: ${(error as Error).message}\n`);
  process.exit(1);
});
