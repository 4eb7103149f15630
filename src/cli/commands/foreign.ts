/** `ferry foreign status|verify` (server side). Owned by the federation work; `check` comes from foreign-check.ts. */
import type { Command } from "commander";
import { registerForeignCheck } from "./foreign-check.js";

export function registerForeignCommands(program: Command): void {
  const foreign = program.command("foreign").description("foreign (federated) layers");
  registerForeignCheck(foreign);
}
