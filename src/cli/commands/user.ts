/** `ferry user ...` (htpasswd management). Owned by the access-control work. */
import type { Command } from "commander";

export function registerUserCommands(_program: Command): void {}
