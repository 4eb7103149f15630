/** Every subcommand, registered in the order `ferry --help` lists them. */
import type { Command } from "commander";
import { registerServe } from "./serve.js";
import { registerGc } from "./gc.js";
import { registerClientCommands } from "./client.js";
import { registerUserCommands } from "./user.js";
import { registerForeignCommands } from "./foreign.js";

export function registerCommands(program: Command): void {
  registerServe(program);
  registerGc(program);
  registerClientCommands(program);
  registerForeignCommands(program);
  registerUserCommands(program);
}
