/**
 * observability.md's example sets `headers: { x-api-key: "…" }`. Copied as is,
 * Ferry started, said "tracing enabled", and then every export failed in the
 * log with Node's ERR_INVALID_CHAR: no span ever reached the collector. A header
 * that cannot be sent must stop start-up, naming the key and not the value.
 */
import { test } from "node:test";
import { configErrorMessage } from "../helpers/config-error.js";
import assert from "node:assert/strict";
import { loadConfig } from "../../src/config/load.js";


test("a header value Node cannot send is a config error naming the header, not its value", () => {
  const text = configErrorMessage(() => loadConfig({ overrides: { tracing: { enabled: true, headers: { "x-api-key": "…" } } } }));
  assert.match(text, /tracing\.headers\.x-api-key.*printable ASCII/);
  const secret = "s3cr3t-value";
  const withNewline = configErrorMessage(() => loadConfig({ overrides: { tracing: { enabled: true, headers: { authorization: `Bearer ${secret}\n` } } } }));
  assert.match(withNewline, /tracing\.headers\.authorization/);
  assert.ok(!withNewline.includes(secret), "the value must not be printed");
});

test("a header name with a space or colon is refused", () => {
  // zod reports a record key's failure as "Invalid key in record", under the key's path.
  assert.match(configErrorMessage(() => loadConfig({ overrides: { tracing: { headers: { "x api key": "k" } } } })), /tracing\.headers\.x api key: (Invalid key|is not an HTTP header name)/);
  assert.match(configErrorMessage(() => loadConfig({ overrides: { tracing: { headers: { "x-key:": "k" } } } })), /tracing\.headers\.x-key:: (Invalid key|is not an HTTP header name)/);
});

test("ordinary header names and values, spaces included, are accepted", () => {
  const config = loadConfig({ overrides: { tracing: { enabled: true, headers: { "x-api-key": "abc123", authorization: "Bearer a.b.c" } } } });
  assert.deepEqual(config.tracing.headers, { "x-api-key": "abc123", authorization: "Bearer a.b.c" });
});
