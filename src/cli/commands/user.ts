/**
 * `ferry user add NAME` / `ferry user rm NAME`: bcrypt entries in an htpasswd
 * file (the one `auth.htpasswd` names, or --file). A running registry picks
 * the change up within a few seconds; no restart.
 */
import { createInterface } from "node:readline";
import { Writable } from "node:stream";
import type { Command } from "commander";

interface UserFlags {
  file?: string;
  config?: string;
  passwordStdin?: boolean;
  cost?: string;
}

const USER_NAME = /^[^:\s]{1,256}$/;
const MIN_COST = 10;
const MAX_COST = 16;

/** The hashes already in the file (any line NAME:HASH); none when it does not exist yet. */
async function existingHashes(file: string): Promise<string[]> {
  const { readFile } = await import("node:fs/promises");
  const text = await readFile(file, "utf8").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return "";
    throw error;
  });
  return text.split(/\r?\n/).flatMap((line) => {
    const colon = line.indexOf(":");
    return line.startsWith("#") || colon <= 0 ? [] : [line.slice(colon + 1).trim()];
  });
}

export function registerUserCommands(program: Command): void {
  const user = program.command("user").description("manage users in the htpasswd file (bcrypt)");
  user
    .command("add <name>")
    .description("add a user or change their password (prompts, or reads one line from stdin with --password-stdin)")
    .option("-f, --file <htpasswd>", "htpasswd file (default: auth.htpasswd from the config)")
    .option("-c, --config <file>", "YAML config file to take auth.htpasswd from")
    .option("--password-stdin", "read the password from standard input")
    .option("--cost <n>", "bcrypt cost factor (10-16; default: the cost most entries in the file have, else 12)")
    .action(async (name: string, flags: UserFlags) => addUser(name, flags));
  user
    .command("rm <name>")
    .description("remove a user from the htpasswd file")
    .option("-f, --file <htpasswd>", "htpasswd file (default: auth.htpasswd from the config)")
    .option("-c, --config <file>", "YAML config file to take auth.htpasswd from")
    .action(async (name: string, flags: UserFlags) => removeUser(name, flags));
}

// bcryptjs and the config loader (zod) are imported when a user command runs, not by every `ferry` command.
async function htpasswdFile(flags: UserFlags): Promise<string> {
  if (flags.file) return flags.file;
  const { loadConfig, ConfigError } = await import("../../config/load.js");
  let file: string | undefined;
  try {
    file = loadConfig({ file: flags.config, env: process.env }).auth?.htpasswd;
  } catch (error) {
    if (error instanceof ConfigError) throw new Error(error.message);
    throw error;
  }
  if (!file) throw new Error("no htpasswd file: pass --file, or set auth.htpasswd in the config (--config / FERRY_AUTH__HTPASSWD)");
  return file;
}

async function addUser(name: string, flags: UserFlags): Promise<void> {
  if (!USER_NAME.test(name)) throw new Error(`user name "${name}" may not contain ":" or white space`);
  const requested = flags.cost === undefined ? undefined : Number(flags.cost);
  if (requested !== undefined && (!Number.isInteger(requested) || requested < MIN_COST || requested > MAX_COST)) {
    throw new Error(`--cost must be an integer from ${MIN_COST} to ${MAX_COST}`);
  }
  const file = await htpasswdFile(flags);
  const { typicalCost, DEFAULT_BCRYPT_COST } = await import("../../auth/bcrypt-cost.js");
  const existing = typicalCost(await existingHashes(file));
  // Entries of one cost keep failed logins equally slow for every name: the registry checks unknown
  // names against a dummy of the most common cost, so a user with another cost can be told apart by timing.
  const fileCost = existing !== undefined && existing >= MIN_COST && existing <= MAX_COST ? existing : undefined;
  const cost = requested ?? fileCost ?? DEFAULT_BCRYPT_COST;
  if (existing !== undefined && cost !== existing) {
    process.stderr.write(
      `note: most entries in ${file} have bcrypt cost ${existing}, this one gets ${cost}; ` +
        "failed logins for names of a different cost take a different time, which tells that the name exists\n",
    );
  }
  const password = flags.passwordStdin ? await readStdinLine() : await promptTwice(name);
  if (password === "") throw new Error("empty password refused");
  const { default: bcrypt } = await import("bcryptjs");
  const { updateHtpasswd } = await import("../../auth/htpasswd.js");
  const hash = await bcrypt.hash(password, cost);
  const existed = await updateHtpasswd(file, name, hash);
  process.stdout.write(`${existed ? "updated" : "added"} user ${name} in ${file}\n`);
}

async function removeUser(name: string, flags: UserFlags): Promise<void> {
  const file = await htpasswdFile(flags);
  const { updateHtpasswd } = await import("../../auth/htpasswd.js");
  const existed = await updateHtpasswd(file, name, null);
  if (!existed) throw new Error(`no user ${name} in ${file}`);
  process.stdout.write(`removed user ${name} from ${file}\n`);
}

async function readStdinLine(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  // One line, as `docker login --password-stdin` reads it: drop the trailing newline only.
  return Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "");
}

async function promptTwice(name: string): Promise<string> {
  if (!process.stdin.isTTY) throw new Error("standard input is not a terminal; use --password-stdin to pipe the password");
  const first = await prompt(`Password for ${name}: `);
  const second = await prompt("Repeat password: ");
  if (first !== second) throw new Error("the passwords do not match");
  return first;
}

/** Reads a line from the terminal without echoing it. */
function prompt(question: string): Promise<string> {
  let muted = false;
  const output = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (!muted) process.stderr.write(chunk);
      callback();
    },
  });
  const rl = createInterface({ input: process.stdin, output, terminal: true });
  return new Promise((resolve) => {
    rl.question(question, (answer) => {
      rl.close();
      process.stderr.write("\n");
      resolve(answer);
    });
    muted = true;
  });
}
