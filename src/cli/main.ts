#!/usr/bin/env node
/** The `ferry` command. Each subcommand lives in its own module under commands/. */
import { Command } from "commander";
import { registerCommands } from "./commands/index.js";

const program = new Command();
program
  .name("ferry")
  .description("Ferry: an OCI registry with layer federation, and its client")
  .version("0.1.0")
  .showHelpAfterError();

registerCommands(program);

program.parseAsync(process.argv).catch((error: unknown) => {
  process.stderr.write(`ferry: ${(error as Error).message}\n`);
  process.exit(1);
});
