#!/usr/bin/env -S node --max-semi-space-size=4
/**
 * The `ferry` command. Each subcommand lives in its own module under commands/, loaded only when used.
 *
 * The launcher caps V8's young generation at 4 MiB per semi-space (Node's default grows to
 * 16 under request load): the mix's peak RSS 124 -> 103 MiB for ~5% more CPU per cached
 * manifest GET (docs/benchmarks-history.md, "Speed round 6"). It can only be set on the node command
 * line, so `npm start`, the service unit and the bench pass it too.
 */
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
