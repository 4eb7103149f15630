/**
 * The serving keys of the federation config (`cache: pin`, `verifyBeforeServe`)
 * and the complete example of docs/federation.md, parsed as Ferry parses them.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import YAML from "yaml";
import { DEFAULT_VERIFY_BEFORE_SERVE, federationConfigSchema } from "../../src/federation/config.js";

test("cache: pin reads as a cached, pinned rule; true and false as before", () => {
  const parsed = federationConfigSchema.parse({
    rules: [
      { match: "^https://a/", serve: "proxy", cache: "pin" },
      { match: "^https://b/", serve: "proxy", cache: true, verifyBeforeServe: "1MiB" },
      { match: "^https://c/", serve: "proxy", verifyBeforeServe: false },
    ],
    default: { serve: "proxy", cache: "pin" },
  });
  assert.deepEqual(parsed.rules.map((r) => [r.cache, r.pin, r.verifyBeforeServe]), [
    [true, true, undefined],
    [true, false, 1024 * 1024],
    [false, false, false],
  ]);
  assert.equal(parsed.default.pin, true);
  assert.equal(parsed.proxy.verifyBeforeServe, DEFAULT_VERIFY_BEFORE_SERVE);
  assert.equal(federationConfigSchema.parse({}).default.pin, false);
  assert.throws(() => federationConfigSchema.parse({ rules: [{ match: "x", cache: "forever" }] }));
  assert.throws(() => federationConfigSchema.parse({ proxy: { verifyBeforeServe: "lots" } }));
});

test("the complete example in docs/federation.md parses", () => {
  const doc = readFileSync(new URL("../../../docs/federation.md", import.meta.url), "utf8");
  const block = /```yaml\n(federation:\n  enabled: true[\s\S]*?)```/.exec(doc);
  assert.ok(block, "the example is in the docs");
  const parsed = federationConfigSchema.parse((YAML.parse(block[1]!) as { federation: unknown }).federation);
  const pinned = parsed.rules.find((r) => r.pin);
  assert.ok(pinned, "the example shows cache: pin");
  assert.equal(parsed.proxy.verifyBeforeServe, 64 * 1024 * 1024);
});
