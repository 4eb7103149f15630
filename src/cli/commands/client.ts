/** Client commands (login, push, pull, copy, inspect, tags, rm, catalog). Owned by the client work. */
import type { Command } from "commander";

export function registerClientCommands(_program: Command): void {}
