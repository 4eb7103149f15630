/**
 * Loads the configuration: defaults, then the YAML file, then environment
 * variables, then command-line flags, each overriding the one before.
 *
 * Environment naming rule: `FERRY_` + the key path, each key in UPPER_SNAKE
 * case, nested keys joined by a double underscore. Values are read as YAML
 * scalars or flow collections, so `true`, `42` and `[https]` work:
 *   federation.verify.onFailure  ->  FERRY_FEDERATION__VERIFY__ON_FAILURE=warn
 *   listen                       ->  FERRY_LISTEN=0.0.0.0:5000
 * A FERRY_* variable that names no setting is ignored with a warning (other
 * tools use the prefix too); unknown keys in a file or in flags are errors.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { z } from "zod";
import { configSchema, type Config } from "./schema.js";
import { closestKey, keysAt, listPrefix, relocatedKey } from "./suggest.js";

/**
 * The YAML parser is loaded on first use (~4 MiB resident): a `ferry serve`
 * with no config file and only simple FERRY_* values never needs it.
 */
let yamlModule: typeof import("yaml") | undefined;
function parseYaml(text: string): unknown {
  yamlModule ??= createRequire(import.meta.url)("yaml") as typeof import("yaml");
  return yamlModule.parse(text);
}

/** YAML 1.2 core-schema scalars that are not strings; a plain word other than these is the word itself. */
const YAML_WORDS = new Set(["null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE"]);

/**
 * A variable's value as YAML reads it. Common values (a plain word, a small
 * decimal, true/false) are recognised here with the same result as the YAML
 * parser (test/config/env-scalars.test.ts); anything else goes to the parser.
 */
export function parseEnvValue(raw: string): unknown {
  if (raw === "true") return true;
  if (raw === "false") return false;
  if (/^(?:0|[1-9][0-9]{0,14})$/.test(raw)) return Number(raw);
  if (/^[A-Za-z][A-Za-z0-9_-]*$/.test(raw) && !YAML_WORDS.has(raw)) return raw;
  return parseYaml(raw);
}

/** A file with nothing but blank lines and comments is an empty mapping, without loading the parser. */
function isBlankYaml(text: string): boolean {
  return text.split("\n").every((line) => /^\s*(?:#.*)?$/.test(line));
}

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

export interface EnvSetting {
  name: string;
  path: string[];
  value: unknown;
}

function envSettings(env: NodeJS.ProcessEnv): EnvSetting[] {
  const settings: EnvSetting[] = [];
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || NON_CONFIG_ENV.has(name) || raw === undefined) continue;
    const path = name.slice(ENV_PREFIX.length).split("__").map(keyForEnvSegment);
    let value: unknown;
    try {
      value = raw === "" ? "" : parseEnvValue(raw);
    } catch {
      value = raw;
    }
    settings.push({ name, path, value });
  }
  return settings;
}

function treeOf(settings: EnvSetting[]): Tree {
  const tree: Tree = {};
  for (const { path, value } of settings) setPath(tree, path, value);
  return tree;
}

export function configFromEnv(env: NodeJS.ProcessEnv): Tree {
  return treeOf(envSettings(env));
}

function getPath(tree: Tree, path: string[]): unknown {
  let node: unknown = tree;
  for (const key of path) {
    if (typeof node !== "object" || node === null || Array.isArray(node)) return undefined;
    node = (node as Tree)[key];
  }
  return node;
}

/** Unknown key paths (e.g. ["project"], ["log", "file"]) reported by a failed parse. */
function unknownKeyPaths(error: z.ZodError): string[][] {
  return error.issues.flatMap((issue) =>
    issue.code === "unrecognized_keys" ? issue.keys.map((key) => [...issue.path.map(String), key]) : [],
  );
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
    parsed = isBlankYaml(text) ? null : parseYaml(text);
  } catch (error) {
    throw new ConfigError(`config file ${file} is not valid YAML: ${(error as Error).message}`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== "object" || Array.isArray(parsed)) throw new ConfigError(`config file ${file} must be a YAML mapping`);
  return parsed as Tree;
}

/** Where a setting's value came from, so an error names what the user actually wrote. */
export interface SettingSources {
  /** Environment variables that were applied, by key path. */
  env: EnvSetting[];
  /** Flag names by top-level key (e.g. listen -> --listen). */
  flags: Record<string, string>;
  file?: string;
}

function envHint(path: string[]): string {
  // Variables cannot address one item of a list: the hint names the variable that sets the whole list.
  const list = listPrefix(configSchema, path);
  if (list) return `env ${envNameForKey(list)}='[...]' sets the whole list, in YAML flow syntax`;
  return `env ${envNameForKey(path)}`;
}

function suggestion(path: string[], key: string, asEnv: boolean): string {
  const close = closestKey(key, keysAt(configSchema, path));
  const full = close ? [...path, close] : relocatedKey(configSchema, path, key);
  if (!full) return "";
  return asEnv ? `; did you mean ${envNameForKey(full)}?` : `; did you mean ${full.join(".")}?`;
}

/**
 * Names the source of the value at `path`: the flag, the variable, or the config key (in its file).
 * `inside`: only a variable that set a parent of `path` counts (an unknown key set by a variable of its
 * own name never gets here: it is ignored with a warning, so the file must have it).
 */
function describe(path: string[], sources: SettingSources | undefined, inside: boolean): string {
  const flag = sources && path.length > 0 ? sources.flags[path[0]!] : undefined;
  if (flag) return `flag ${flag}`;
  const fromEnv = sources?.env.find(
    (setting) => (inside ? setting.path.length < path.length : setting.path.length <= path.length) && setting.path.every((key, i) => path[i] === key),
  );
  if (fromEnv) return `environment variable ${fromEnv.name} (${path.join(".")})`;
  const where = sources?.file ? ` in ${sources.file}` : "";
  return `config key ${path.join(".") || "(root)"}${where}`;
}

export function formatConfigIssues(error: z.ZodError, sources?: SettingSources): string {
  return error.issues
    .flatMap((issue) => {
      const path = issue.path.map(String);
      if (issue.code === "unrecognized_keys") {
        // One line per unknown key, named in full, with the closest known key.
        return issue.keys.map((k) => `  - ${describe([...path, k], sources, true)}: not a known setting${suggestion(path, k, false)}`);
      }
      const source = describe(path, sources, false);
      let hint = source.startsWith("config key") ? ` (${envHint(path)})` : "";
      // A variable's value is read as YAML: a list must be written as one.
      if (source.startsWith("environment variable") && issue.code === "invalid_type" && issue.expected === "array") {
        hint = ` (write a YAML list, e.g. ${source.split(" ")[2]}='[a, b]')`;
      }
      return [`  - ${source}: ${issue.message}${hint}`];
    })
    .join("\n");
}

export interface LoadOptions {
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Flag values (e.g. --listen, --data), applied last. */
  overrides?: Tree;
  /** Flag names by top-level key they set (e.g. { listen: "--listen" }), so errors name the flag. */
  flagNames?: Record<string, string>;
  /** Receives one line per problem that does not stop start-up (default: written to stderr). */
  onWarning?: (message: string) => void;
}

export function loadConfig(options: LoadOptions = {}): Config {
  const env = options.env ?? {};
  const warn = options.onWarning ?? ((message: string) => process.stderr.write(`ferry: warning: ${message}\n`));
  const file = options.file ?? env.FERRY_CONFIG;
  const fromFile = file ? readConfigFile(file) : {};
  const explicit = deepMerge(fromFile, options.overrides ?? {});
  let settings = envSettings(env);
  // Shells and CI systems set FERRY_* variables of their own: a variable that names no setting
  // is ignored with a warning. Unknown keys in the file or flags stay errors (a typo there is ours to report).
  for (;;) {
    const tree = deepMerge(deepMerge(fromFile, treeOf(settings)), options.overrides ?? {});
    const result = configSchema.safeParse(tree);
    if (result.success) return result.data;
    const unknown = unknownKeyPaths(result.error).filter((path) => getPath(explicit, path) === undefined);
    const stray = settings.filter((setting) => unknown.some((path) => path.every((key, i) => setting.path[i] === key)));
    if (stray.length === 0) {
      const sources: SettingSources = { env: settings, flags: options.flagNames ?? {}, file };
      throw new ConfigError(`invalid configuration:\n${formatConfigIssues(result.error, sources)}`);
    }
    for (const setting of stray) {
      const unknownAt = unknown.find((path) => path.every((key, i) => setting.path[i] === key))!;
      const parent = unknownAt.slice(0, -1);
      const hint = suggestion(parent, unknownAt[unknownAt.length - 1]!, true).replace(/^; /, " (").replace(/\?$/, "?)");
      warn(`environment variable ${setting.name} is not a Ferry setting${hint === "" ? "" : hint}; ignored`);
    }
    settings = settings.filter((setting) => !stray.includes(setting));
  }
}
