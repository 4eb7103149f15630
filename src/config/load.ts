/**
 * Loads the configuration: defaults, then the YAML file, then environment
 * variables, then command-line flags, each overriding the one before.
 *
 * Environment naming rule: `FERRY_` + the key path, each key in UPPER_SNAKE
 * case, nested keys joined by a double underscore. Values are read as YAML
 * scalars or flow collections, so `true`, `42` and `[https]` work:
 *   federation.verify.onFailure  ->  FERRY_FEDERATION__VERIFY__ON_FAILURE=warn
 *   listen                       ->  FERRY_LISTEN=0.0.0.0:5000
 */
import { readFileSync } from "node:fs";
import YAML from "yaml";
import { z } from "zod";
import { configSchema, type Config } from "./schema.js";

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

type Tree = Record<string, unknown>;

export const ENV_PREFIX = "FERRY_";

/** Environment variables that are not config keys. */
const NON_CONFIG_ENV = new Set(["FERRY_CONFIG"]);

export function envNameForKey(path: string[]): string {
  return ENV_PREFIX + path.map((key) => key.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase()).join("__");
}

function keyForEnvSegment(segment: string): string {
  return segment.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

export function configFromEnv(env: NodeJS.ProcessEnv): Tree {
  const tree: Tree = {};
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || NON_CONFIG_ENV.has(name) || raw === undefined) continue;
    const path = name.slice(ENV_PREFIX.length).split("__").map(keyForEnvSegment);
    let value: unknown;
    try {
      value = raw === "" ? "" : YAML.parse(raw);
    } catch {
      value = raw;
    }
    setPath(tree, path, value);
  }
  return tree;
}

function setPath(tree: Tree, path: string[], value: unknown): void {
  let node = tree;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== "object" || next === null || Array.isArray(next)) node[key] = {};
    node = node[key] as Tree;
  }
  node[path[path.length - 1]!] = value;
}

function deepMerge(base: Tree, over: Tree): Tree {
  const out: Tree = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const current = out[key];
    const bothObjects =
      typeof value === "object" && value !== null && !Array.isArray(value) &&
      typeof current === "object" && current !== null && !Array.isArray(current);
    out[key] = bothObjects ? deepMerge(current as Tree, value as Tree) : value;
  }
  return out;
}

function readConfigFile(file: string): Tree {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new ConfigError(`cannot read config file ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = YAML.parse(text);
  } catch (error) {
    throw new ConfigError(`config file ${file} is not valid YAML: ${(error as Error).message}`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== "object" || Array.isArray(parsed)) throw new ConfigError(`config file ${file} must be a YAML mapping`);
  return parsed as Tree;
}

export function formatConfigIssues(error: z.ZodError): string {
  return error.issues
    .flatMap((issue) => {
      const path = issue.path.map(String);
      if (issue.code === "unrecognized_keys") {
        // One line per unknown key, named in full, with the variable that would set it.
        return issue.keys.map((k) => `  - config key ${[...path, k].join(".")}: not a known setting (env ${envNameForKey([...path, k])})`);
      }
      return [`  - config key ${path.join(".") || "(root)"}: ${issue.message} (env ${envNameForKey(path)})`];
    })
    .join("\n");
}

export interface LoadOptions {
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Flag values (e.g. --listen, --data), applied last. */
  overrides?: Tree;
}

export function loadConfig(options: LoadOptions = {}): Config {
  const env = options.env ?? {};
  const file = options.file ?? env.FERRY_CONFIG;
  let tree: Tree = file ? readConfigFile(file) : {};
  tree = deepMerge(tree, configFromEnv(env));
  tree = deepMerge(tree, options.overrides ?? {});
  const result = configSchema.safeParse(tree);
  if (!result.success) throw new ConfigError(`invalid configuration:\n${formatConfigIssues(result.error)}`);
  return result.data;
}
