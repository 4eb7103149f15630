/** `ferry foreign status` and `ferry foreign verify` against a running registry. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { startTestRegistry } from "../helpers/registry.js";
import { FakeSource, blob, pushForeignImage } from "./helpers.js";
import { splitImage } from "../../src/cli/commands/foreign.js";

const CLI = new URL("../../src/cli/main.js", import.meta.url).pathname;

function ferry(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {});
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

test("splitImage: tag, digest and default tag", () => {
  assert.deepEqual(splitImage("team/app:v1"), { repository: "team/app", reference: "v1" });
  assert.deepEqual(splitImage("team/app"), { repository: "team/app", reference: "latest" });
  assert.deepEqual(splitImage("localhost/app@sha256:abc"), { repository: "localhost/app", reference: "sha256:abc" });
});

test("ferry foreign verify and status report what the registry found", async (t) => {
  const s = await new FakeSource().start();
  t.after(() => s.close());
  const r = await startTestRegistry({ federation: { rules: [{ match: "^http://127", serve: "proxy" }], proxy: { allowPrivateNetworks: true } } });
  t.after(() => r.close());
  const good = blob(100);
  const bad = blob(200);
  const goodUrl = s.put("/good", good.bytes);
  s.behave("/bad", { kind: "status", status: 503 });
  await pushForeignImage(r.url, "team/app", "v1", [{ ...good, urls: [goodUrl] }, { ...bad, urls: [s.url("/bad")] }]);

  const verify = await ferry(["foreign", "verify", "team/app:v1", "--registry", r.url]);
  assert.equal(verify.code, 1, verify.stderr);
  assert.match(verify.stdout, new RegExp(`ok +${good.digest}`));
  assert.match(verify.stdout, new RegExp(`FAILED +${bad.digest}`));
  assert.ok(verify.stdout.includes(`${s.url("/bad")}: HTTP 503`));
  assert.match(verify.stdout, /some foreign layers could not be verified/);

  const status = await ferry(["foreign", "status", "--registry", r.url]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, new RegExp(`127\\.0\\.0\\.1:${s.port} +(healthy|failing) +1 +1 .* HTTP 503`));
  assert.ok(status.stdout.includes(`team/app  ${good.digest}  100 bytes  verified`));
  assert.ok(status.stdout.includes(`team/app  ${bad.digest}  200 bytes  failed`));
  assert.match(status.stdout, /proxy \(rules\[0\]/);

  const json = await ferry(["foreign", "status", "--registry", r.url, "--json", "--repository", "team/app"]);
  const parsed = JSON.parse(json.stdout) as { layers: unknown[]; sources: unknown[] };
  assert.equal(parsed.layers.length, 2);

  const missing = await ferry(["foreign", "verify", "team/app:nope", "--registry", r.url]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /answered 404: MANIFEST_UNKNOWN/);
  const down = await ferry(["foreign", "status", "--registry", "http://127.0.0.1:1"]);
  assert.equal(down.code, 1);
  assert.match(down.stderr, /cannot reach the registry at http:\/\/127\.0\.0\.1:1/);
});
