/** Turns the server flags shared by `serve` and `gc` into a loaded Config (or a clear error). */
import cluster from "node:cluster";
import { isMainThread } from "node:worker_threads";
import { ConfigError, loadConfig } from "../config/load.js";
import type { Config } from "../config/schema.js";

export interface ServerFlags {
  config?: string;
  listen?: string;
  data?: string;
  workers?: string;
  threads?: string;
}

export function configFromFlags(flags: ServerFlags): Config {
  const overrides: Record<string, unknown> = {};
  if (flags.listen !== undefined) overrides.listen = flags.listen;
  if (flags.data !== undefined) overrides.data = flags.data;
  if (flags.workers !== undefined) {
    // Number("") is 0 and Number("2x") NaN: both would reach the schema as something the user never wrote.
    if (!/^\d+$/.test(flags.workers)) {
      process.stderr.write(`ferry: flag --workers: expected a whole number of processes, got "${flags.workers}"\n`);
      process.exit(2);
    }
    overrides.workers = Number(flags.workers);
  }
  if (flags.threads !== undefined) {
    if (!/^(\d+|auto)$/.test(flags.threads)) {
      process.stderr.write(`ferry: flag --threads: expected a whole number of threads or "auto", got "${flags.threads}"\n`);
      process.exit(2);
    }
    overrides.threads = flags.threads === "auto" ? "auto" : Number(flags.threads);
  }
  try {
    // Workers load the same configuration as the primary, which already printed any warning.
    return loadConfig({
      file: flags.config,
      env: process.env,
      overrides,
      // Only flags actually given: a bad FERRY_LISTEN must not be blamed on --listen.
      flagNames: Object.fromEntries(Object.keys(overrides).map((key) => [key, `--${key}`])),
      onWarning: cluster.isWorker || !isMainThread ? () => undefined : undefined,
    });
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`ferry: ${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
}
