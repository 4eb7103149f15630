/**
 * FERRY_* values are read as YAML scalars (docs/configuration.md). The common
 * ones are recognised without loading the YAML parser (it costs ~4 MiB of a
 * registry's resident memory); these tests hold that shortcut to the parser's
 * own answers, and check that a registry with no config file and simple
 * variables really does not load the parser.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";
import { loadConfig, parseEnvValue } from "../../src/config/load.js";

const SAMPLES = [
  "true", "false", "True", "TRUE", "False", "FALSE", "null", "Null", "NULL", "~", "yes", "no", "on", "off", "y", "n",
  "0", "1", "42", "007", "-1", "+1", "0x1F", "0o17", "1e3", "1.5", ".inf", "-.inf", ".nan", "123456789012345", "1234567890123456",
  "info", "debug", "s3", "copy", "a-b", "a_b", "A1", "x", "Infinity", "NaN", "nan", "inf",
  "0.0.0.0:5000", "127.0.0.1:6001", ":5000", "[https]", "[a, b]", "{a: 1}", "a b", "a: b", "'quoted'", "\"dq\"", "#comment", "a #b",
  "http://example.com", "/var/lib/ferry", "10s", "5m", "1GiB", " padded ", "tab\there",
];

describe("FERRY_* values without the YAML parser", () => {
  for (const raw of SAMPLES) {
    it(`${JSON.stringify(raw)} reads as the YAML parser reads it`, () => {
      let expected: unknown;
      try {
        expected = YAML.parse(raw);
      } catch {
        return; // the loader keeps such a value as the raw string; not the shortcut's concern
      }
      assert.deepEqual(parseEnvValue(raw), expected);
    });
  }

  it("a registry configured by defaults, an empty or comment-only file and simple variables does not load the parser; a real file does", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-yaml-"));
    try {
      const blank = join(dir, "blank.yml");
      const real = join(dir, "real.yml");
      await writeFile(blank, "# nothing set here\n\n   \n");
      await writeFile(real, "log:\n  level: warn\n");
      const load = fileURLToPath(new URL("../../src/config/load.js", import.meta.url));
      const yamlLoaded = (file: string | null): boolean => {
        const script = [
          `import { createRequire } from "node:module";`,
          `const { loadConfig } = await import(${JSON.stringify(load)});`,
          `const config = loadConfig({ file: ${JSON.stringify(file ?? undefined)}, env: { FERRY_LOG__LEVEL: "debug", FERRY_WORKERS: "2", FERRY_LOG__ACCESS_LOG: "false" } });`,
          `if (config.workers !== 2 || config.log.accessLog !== false) throw new Error("variables not applied");`,
          `const cache = createRequire(import.meta.url).cache;`,
          `process.stdout.write(String(Object.keys(cache).some((k) => k.includes("/node_modules/yaml/"))));`,
        ].join("\n");
        return execFileSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" }) === "true";
      };
      assert.equal(yamlLoaded(null), false, "no config file");
      assert.equal(yamlLoaded(blank), false, "comment-only config file");
      assert.equal(yamlLoaded(real), true, "a config file with settings is parsed as YAML");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a blank config file is an empty mapping, as before", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-yaml-"));
    try {
      const blank = join(dir, "blank.yml");
      await writeFile(blank, "\n# only a comment\n");
      assert.deepEqual(loadConfig({ file: blank }), loadConfig({}));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
