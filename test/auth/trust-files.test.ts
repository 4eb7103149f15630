/**
 * An operator who copies auth.md's "behind an existing token server" example
 * before the key file is in place must be told which setting points at the
 * missing or broken file, not a bare ENOENT or a JSON parser's complaint.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/config/load.js";
import { TokenService } from "../../src/auth/tokens.js";

async function start(trust: Record<string, string>): Promise<unknown> {
  const dir = await mkdtemp(join(tmpdir(), "ferry-trust-"));
  const config = loadConfig({
    overrides: { auth: { token: { enabled: false, realm: "https://auth.example.com/token", service: "registry.example", trust: [{ issuer: "corp", ...trust }] } } },
  });
  return TokenService.create(config.auth!.token, dir);
}

test("a missing trusted publicKey file names the setting and the path", async () => {
  const missing = join(tmpdir(), "ferry-no-such-dir", "token-signer.pem");
  await assert.rejects(start({ publicKey: missing }), (error: Error) => {
    assert.match(error.message, /auth\.token\.trust\[\]\.publicKey/);
    assert.ok(error.message.includes(missing), error.message);
    assert.match(error.message, /ENOENT/);
    return true;
  });
});

test("a missing or non-JSON jwks file names the setting", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ferry-trust-"));
  await assert.rejects(start({ jwks: join(dir, "nope.json") }), /cannot read auth\.token\.trust\[\]\.jwks .*ENOENT/);
  await writeFile(join(dir, "bad.json"), "-----BEGIN PUBLIC KEY-----\n");
  await assert.rejects(start({ jwks: join(dir, "bad.json") }), /auth\.token\.trust\[\]\.jwks .*bad\.json is not JSON/);
  await writeFile(join(dir, "null.json"), "null");
  await assert.rejects(start({ jwks: join(dir, "null.json") }), /is not a JWKS/);
});
