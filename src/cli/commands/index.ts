/**
 * Every subcommand, registered in the order `ferry --help` lists them. Each
 * group's module is imported only when it is needed: a run registers just the
 * group of the command it names (`ferry tags` never loads the server, the
 * user store or the federation commands); help and unknown commands load all.
 */
import type { Command } from "commander";

type Group = "serve" | "gc" | "migrate" | "client" | "foreign" | "user" | "mirror" | "token";

const ORDER: Group[] = ["serve", "gc", "migrate", "client", "foreign", "user", "mirror", "token"];

const CLIENT = new Set(["login", "logout", "push", "pull", "copy", "inspect", "manifest", "digest", "config", "tags", "catalog", "tag", "untag", "rm", "referrers", "blob"]);

/** The group a command name belongs to, or undefined (help, options, a typo). */
export function groupOf(name: string | undefined): Group | undefined {
  if (name === undefined) return undefined;
  if (name === "serve" || name === "gc" || name === "migrate" || name === "foreign" || name === "user" || name === "mirror" || name === "token") return name;
  return CLIENT.has(name) ? "client" : undefined;
}

async function register(group: Group, program: Command): Promise<void> {
  switch (group) {
    case "serve":
      return (await import("./serve.js")).registerServe(program);
    case "gc":
      return (await import("./gc.js")).registerGc(program);
    case "migrate":
      return (await import("./migrate.js")).registerMigrate(program);
    case "client":
      return (await import("./client.js")).registerClientCommands(program);
    case "foreign":
      return (await import("./foreign.js")).registerForeignCommands(program);
    case "user":
      return (await import("./user.js")).registerUserCommands(program);
    case "mirror":
      return (await import("./mirror.js")).registerMirrorCommands(program);
    case "token":
      return (await import("./token.js")).registerTokenCommands(program);
  }
}

/** Registers the group of `commandName`, or every group when it names none. */
export async function registerCommands(program: Command, commandName?: string): Promise<void> {
  const only = groupOf(commandName);
  for (const group of only ? [only] : ORDER) await register(group, program);
}
