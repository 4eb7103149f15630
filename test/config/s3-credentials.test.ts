/**
 * storage.md's S3 example has "…" where the keys go. Pasted as is (or a key
 * read from a file with its trailing newline), the value cannot go into an
 * Authorization header: start-up used to fail with S3 "answered TypeError:
 * Invalid character in header content". The configuration must say which key
 * is wrong, without printing the secret.
 */
import { test } from "node:test";
import { configErrorMessage } from "../helpers/config-error.js";
import assert from "node:assert/strict";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/config/load.js";


test("the docs' … placeholder in a config file names both keys", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ferry-s3cred-"));
  const file = join(dir, "ferry.yaml");
  await writeFile(file, "storage:\n  driver: s3\n  s3:\n    bucket: ferry\n    accessKeyId: …\n    secretAccessKey: …\n");
  const text = configErrorMessage(() => loadConfig({ file }));
  assert.match(text, /storage\.s3\.accessKeyId.*visible ASCII/);
  assert.match(text, /storage\.s3\.secretAccessKey.*visible ASCII/);
});

test("a secret with a trailing newline from the environment is refused without echoing it", () => {
  const secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
  const text = configErrorMessage(() =>
    loadConfig({ env: { FERRY_STORAGE__DRIVER: "s3", FERRY_STORAGE__S3__BUCKET: "ferry", FERRY_STORAGE__S3__ACCESS_KEY_ID: "AKIAIOSFODNN7EXAMPLE", FERRY_STORAGE__S3__SECRET_ACCESS_KEY: `"${secret}\\n"` } }),
  );
  assert.match(text, /FERRY_STORAGE__S3__SECRET_ACCESS_KEY|secretAccessKey/);
  assert.ok(!text.includes(secret), "the secret must not be printed");
});

test("real-looking keys (letters, digits, / and +) are accepted", () => {
  const config = loadConfig({
    overrides: { storage: { driver: "s3", s3: { bucket: "ferry", accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" } } },
  });
  assert.equal(config.storage.s3?.secretAccessKey, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
});
