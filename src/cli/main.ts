#!/usr/bin/env node
/** The `ferry` command. Each subcommand lives in its own module under commands/, loaded only when used. */
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
