/**
 * Unit tests for configuration: units, the env naming rule, precedence and
 * error messages (issue 2: "Wrong config stops start-up with a message naming
 * the key and what is wrong"; "every config key can also be set by an
 * environment variable").
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseDuration, parseSize } from "../../src/config/units.js";
import { ConfigError, configFromEnv, envNameForKey, loadConfig } from "../../src/config/load.js";

describe("units", () => {
  it("durations: ms, s, m, h, d, decimals, bare numbers are seconds", () => {
    assert.equal(parseDuration("500ms"), 500);
    assert.equal(parseDuration("30s"), 30_000);
    assert.equal(parseDuration("15m"), 900_000);
    assert.equal(parseDuration("168h"), 168 * 3_600_000);
    assert.equal(parseDuration("7d"), 7 * 86_400_000);
    assert.equal(parseDuration("1.5s"), 1500);
    assert.equal(parseDuration("10"), 10_000);
    assert.equal(parseDuration(2), 2000);
    assert.equal(parseDuration("0"), 0);
  });

  it("durations: garbage and negatives are undefined", () => {
    for (const v of ["", "abc", "-5s", "5 parsecs", "1h30m", "s", "NaN"]) assert.equal(parseDuration(v), undefined, v);
    assert.equal(parseDuration(-1), undefined);
    assert.equal(parseDuration(Number.POSITIVE_INFINITY), undefined);
  });

  it("sizes: decimal and binary units, case-insensitive, bare bytes", () => {
    assert.equal(parseSize("4MiB"), 4 * 1024 * 1024);
    assert.equal(parseSize("4mib"), 4 * 1024 * 1024);
    assert.equal(parseSize("10GiB"), 10 * 1024 ** 3);
    assert.equal(parseSize("1KB"), 1000);
    assert.equal(parseSize("1k"), 1000);
    assert.equal(parseSize("512"), 512);
    assert.equal(parseSize("1.5KiB"), 1536);
    assert.equal(parseSize(1024), 1024);
    assert.equal(parseSize("2TiB"), 2 * 1024 ** 4);
  });

  it("sizes: garbage, negatives and fractions of a byte as numbers are undefined", () => {
    for (const v of ["", "MiB", "4 parsecs", "-1", "1e3", "4XB"]) assert.equal(parseSize(v), undefined, v);
    assert.equal(parseSize(-5), undefined);
    assert.equal(parseSize(1.5), undefined);
  });
});

describe("environment naming rule", () => {
  it("FERRY_ + UPPER_SNAKE keys joined by double underscores", () => {
    assert.equal(envNameForKey(["listen"]), "FERRY_LISTEN");
    assert.equal(envNameForKey(["federation", "verify", "onFailure"]), "FERRY_FEDERATION__VERIFY__ON_FAILURE");
    assert.equal(envNameForKey(["manifests", "maxBytes"]), "FERRY_MANIFESTS__MAX_BYTES");
  });

  it("configFromEnv inverts the rule and reads YAML scalars", () => {
    const tree = configFromEnv({
      FERRY_LISTEN: "0.0.0.0:5000",
      FERRY_MANIFESTS__MAX_BYTES: "1MiB",
      FERRY_LOG__ACCESS_LOG: "false",
      FERRY_WORKERS: "4",
      FERRY_CONFIG: "/ignored.yaml",
      OTHER: "x",
    });
    assert.deepEqual(tree, { listen: "0.0.0.0:5000", manifests: { maxBytes: "1MiB" }, log: { accessLog: false }, workers: 4 });
  });
});

describe("loadConfig", () => {
  it("defaults: 127.0.0.1:5000, ./data, 4 MiB manifests", () => {
    const config = loadConfig({ env: {} });
    assert.equal(config.listen, "127.0.0.1:5000");
    assert.equal(config.data, "./data");
    assert.equal(config.manifests.maxBytes, 4 * 1024 * 1024);
    assert.equal(config.uploads.purgeAfter, 24 * 3_600_000);
  });

  it("precedence: file < env < overrides", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-cfg-"));
    try {
      const file = join(dir, "ferry.yaml");
      await writeFile(file, "listen: 127.0.0.1:6000\ndata: /from-file\nmanifests:\n  maxBytes: 2MiB\n");
      const fromFile = loadConfig({ file, env: {} });
      assert.equal(fromFile.listen, "127.0.0.1:6000");
      assert.equal(fromFile.manifests.maxBytes, 2 * 1024 * 1024);
      const withEnv = loadConfig({ file, env: { FERRY_LISTEN: "127.0.0.1:7000" } });
      assert.equal(withEnv.listen, "127.0.0.1:7000");
      assert.equal(withEnv.data, "/from-file");
      const withFlags = loadConfig({ file, env: { FERRY_LISTEN: "127.0.0.1:7000" }, overrides: { listen: "127.0.0.1:8000" } });
      assert.equal(withFlags.listen, "127.0.0.1:8000");
      const viaEnvFile = loadConfig({ env: { FERRY_CONFIG: file } });
      assert.equal(viaEnvFile.data, "/from-file");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a wrong value fails with a message naming the key, the problem and the env variable", () => {
    assert.throws(
      () => loadConfig({ env: { FERRY_MANIFESTS__MAX_BYTES: "lots" } }),
      (error: unknown) =>
        error instanceof ConfigError &&
        /manifests\.maxBytes/.test(error.message) &&
        /not a size/.test(error.message) &&
        /FERRY_MANIFESTS__MAX_BYTES/.test(error.message),
    );
    assert.throws(() => loadConfig({ overrides: { listen: "nonsense" } }), (e: unknown) => e instanceof ConfigError && /listen/.test(e.message));
    assert.throws(
      () => loadConfig({ overrides: { uploads: { purgeAfter: "soon" } } }),
      (e: unknown) => e instanceof ConfigError && /uploads\.purgeAfter/.test(e.message) && /duration/.test(e.message),
    );
  });

  it("an unknown key is named in full, with the place the same key exists when it was written at the wrong level", () => {
    assert.throws(
      () => loadConfig({ overrides: { storage: { fsync: false } } }),
      (e: unknown) => e instanceof ConfigError && /config key storage\.fsync: not a known setting; did you mean storage\.filesystem\.fsync\?/.test(e.message),
    );
  });

  it("an unknown key is an error naming it (a typo must not be silently ignored)", () => {
    assert.throws(
      () => loadConfig({ overrides: { lisen: "127.0.0.1:1" } }),
      (e: unknown) => e instanceof ConfigError && /lisen/.test(e.message),
    );
    // In the environment it is a warning instead: other tools set FERRY_* variables too (test/config/env-warnings.test.ts).
    const warnings: string[] = [];
    loadConfig({ env: { FERRY_MANIFESTS__MAX_BYTE: "1" }, onWarning: (w) => warnings.push(w) });
    assert.match(warnings.join("\n"), /FERRY_MANIFESTS__MAX_BYTE/);
  });

  it("an unreadable or malformed file fails with a ConfigError naming the file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-cfg-"));
    try {
      assert.throws(() => loadConfig({ file: join(dir, "missing.yaml") }), (e: unknown) => e instanceof ConfigError && /missing\.yaml/.test(e.message));
      const bad = join(dir, "bad.yaml");
      await writeFile(bad, "listen: [unclosed\n");
      assert.throws(() => loadConfig({ file: bad }), (e: unknown) => e instanceof ConfigError && /bad\.yaml/.test(e.message));
      const list = join(dir, "list.yaml");
      await writeFile(list, "- a\n- b\n");
      assert.throws(() => loadConfig({ file: list }), (e: unknown) => e instanceof ConfigError);
      const empty = join(dir, "empty.yaml");
      await writeFile(empty, "");
      assert.equal(loadConfig({ file: empty }).listen, "127.0.0.1:5000");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
