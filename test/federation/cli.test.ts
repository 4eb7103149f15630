/**
 * `ferry foreign status|verify HOST[/REPO[:TAG]]` against a running registry
 * without access control (authentication: foreign-cli.test.ts).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestRegistry } from "../helpers/registry.js";
import { FakeSource, blob, pushForeignImage } from "./helpers.js";
import { parseForeignTarget } from "../../src/cli/commands/foreign.js";
import { ferry } from "./cli-runner.js";

test("parseForeignTarget: a registry, a repository, an image; the registry must be named", () => {
  assert.deepEqual(parseForeignTarget("127.0.0.1:5000"), { registry: "127.0.0.1:5000" });
  assert.deepEqual(parseForeignTarget("localhost:5000/"), { registry: "localhost:5000" });
  assert.deepEqual(parseForeignTarget("registry.example.com/team/app"), { registry: "registry.example.com", repository: "team/app" });
  assert.deepEqual(parseForeignTarget("docker://localhost/team/app:v1"), { registry: "localhost", repository: "team/app", tag: "v1" });
  const digest = `sha256:${"a".repeat(64)}`;
  assert.deepEqual(parseForeignTarget(`[::1]:5000/app@${digest}`), { registry: "[::1]:5000", repository: "app", digest });
  assert.throws(() => parseForeignTarget("team/app:v1"), /does not start with a registry/);
  assert.throws(() => parseForeignTarget("localhost:5000/Team/App"), /not a valid repository name/);
});

test("ferry foreign verify and status report what the registry found, per URL", async (t) => {
  const s = await new FakeSource().start();
  t.after(() => s.close());
  const r = await startTestRegistry({ federation: { rules: [{ match: "^http://127", serve: "proxy" }], proxy: { allowPrivateNetworks: true } } });
  t.after(() => r.close());
  const good = blob(100);
  const bad = blob(200);
  const goodUrl = s.put("/good", good.bytes);
  s.behave("/bad", { kind: "status", status: 503 });
  await pushForeignImage(r.url, "team/app", "v1", [{ ...good, urls: [goodUrl] }, { ...bad, urls: [s.url("/bad")] }]);

  const verify = await ferry(["foreign", "verify", `${r.host}/team/app:v1`]);
  assert.equal(verify.code, 1, verify.stderr);
  assert.match(verify.stdout, new RegExp(`ok +${good.digest}`));
  assert.match(verify.stdout, new RegExp(`FAILED +${bad.digest}`));
  assert.ok(verify.stdout.includes(`${s.url("/bad")}: HTTP 503`));
  assert.match(verify.stdout, /some foreign layers could not be verified/);

  const status = await ferry(["foreign", "status", r.host]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /^SOURCES \(re-check off\)/);
  assert.match(status.stdout, new RegExp(`${goodUrl.replace(/\./g, "\\.")} +healthy +1 +0 `));
  assert.match(status.stdout, new RegExp(`${s.url("/bad").replace(/\./g, "\\.")} +failing +0 +1 .* HTTP 503`));
  assert.ok(status.stdout.includes(`team/app  ${good.digest}  100 bytes  verified`));
  assert.ok(status.stdout.includes(`team/app  ${bad.digest}  200 bytes  failed`));
  assert.match(status.stdout, /proxy \(rules\[0\]/);

  const json = await ferry(["foreign", "status", `${r.host}/team/app`, "--json"]);
  const parsed = JSON.parse(json.stdout) as { repository: string; layers: unknown[]; sources: Array<{ url: string; state: string }> };
  assert.equal(parsed.repository, "team/app");
  assert.equal(parsed.layers.length, 2);
  assert.deepEqual(parsed.sources.map((x) => x.state).sort(), ["failing", "healthy"]);

  const other = await ferry(["foreign", "status", `${r.host}/other/repo`, "--json"]);
  assert.deepEqual(JSON.parse(other.stdout).sources, [], "a repository without foreign layers has no sources");

  const missing = await ferry(["foreign", "verify", `${r.host}/team/app:nope`]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /HTTP 404 MANIFEST_UNKNOWN/);
  const down = await ferry(["foreign", "status", "127.0.0.1:1"]);
  assert.equal(down.code, 1);
  assert.match(down.stderr, /127\.0\.0\.1:1/);
  assert.match(down.stderr, /ECONNREFUSED|connection refused/i);
});
