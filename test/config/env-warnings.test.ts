/**
 * FERRY_* variables that name no setting (hardening issue, defect 11): shells
 * and CI systems set their own (FERRY_PROJECT=...); such a variable is
 * ignored with a warning naming it. Unknown keys in a config file or flags
 * stay errors, and a known key with a bad value stays an error.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, loadConfig } from "../../src/config/load.js";

describe("unknown FERRY_* environment variables", () => {
  it("are ignored with one warning each, naming the variable; known ones still apply", () => {
    const warnings: string[] = [];
    const config = loadConfig({
      env: { FERRY_PROJECT: "acme", FERRY_LOG__FILE: "/x", FERRY_DEPLOY_TOKEN: "secret-value", FERRY_LISTEN: "127.0.0.1:6001" },
      onWarning: (w) => warnings.push(w),
    });
    assert.equal(config.listen, "127.0.0.1:6001");
    assert.equal(warnings.length, 3, warnings.join("\n"));
    for (const name of ["FERRY_PROJECT", "FERRY_LOG__FILE", "FERRY_DEPLOY_TOKEN"]) {
      assert.ok(warnings.some((w) => w.includes(name)), `${name} named: ${warnings.join("\n")}`);
    }
    assert.ok(!warnings.join("\n").includes("secret-value"), "values are never echoed");
  });

  it("an unknown key in the config file is still an error, also when the environment sets it too", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-env-"));
    try {
      const file = join(dir, "ferry.yaml");
      await writeFile(file, "project: acme\n");
      assert.throws(() => loadConfig({ file, env: { FERRY_PROJECT: "x" }, onWarning: () => undefined }), (e: unknown) => e instanceof ConfigError && /project/.test(e.message));
      assert.throws(() => loadConfig({ overrides: { lisen: "x" }, onWarning: () => undefined }), ConfigError);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a known variable with a bad value is still an error", () => {
    assert.throws(() => loadConfig({ env: { FERRY_HTTP__REQUEST_IDLE_TIMEOUT: "soon", FERRY_PROJECT: "x" }, onWarning: () => undefined }), /FERRY_HTTP__REQUEST_IDLE_TIMEOUT \(http\.requestIdleTimeout\)/);
  });

  it("the http keys have production defaults and can be set from the environment", () => {
    const defaults = loadConfig({ env: {} });
    assert.deepEqual(defaults.http, {
      headersTimeout: 60_000,
      requestIdleTimeout: 60_000,
      keepAliveTimeout: 65_000,
      maxUploadsPerClient: 32,
      maxHeaderBytes: 16 * 1024,
      maxHeaderCount: 100,
    });
    assert.deepEqual(defaults.trustedProxies, []);
    const set = loadConfig({ env: { FERRY_HTTP__REQUEST_IDLE_TIMEOUT: "5s", FERRY_TRUSTED_PROXIES: "[10.0.0.0/8, '::1']" } });
    assert.equal(set.http.requestIdleTimeout, 5000);
    assert.deepEqual(set.trustedProxies, ["10.0.0.0/8", "::1"]);
  });
});
