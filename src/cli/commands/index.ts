/** Every subcommand, registered in the order `ferry --help` lists them. */
import type { Command } from "commander";
import { registerServe } from "./serve.js";
import { registerGc } from "./gc.js";

export function registerCommands(program: Command): void {
  registerServe(program);
  registerGc(program);
}
