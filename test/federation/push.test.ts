/**
 * Manifest PUT with foreign layers: URL policy, federation off, private
 * repositories, push-time verification (head/fetch, reject/warn) against real
 * sources on 127.0.0.1, marks and their removal. Manifests are never rewritten.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { FakeSource, blob, parseErrors, pushForeignImage, DOCKER_FOREIGN, sha256 } from "./helpers.js";

async function registry(t: { after(fn: () => Promise<void>): void }, federation: Record<string, unknown> = {}): Promise<TestRegistry> {
  const r = await startTestRegistry({ federation: { proxy: { allowPrivateNetworks: true }, ...federation } });
  t.after(() => r.close());
  return r;
}

async function source(t: { after(fn: () => Promise<void>): void }): Promise<FakeSource> {
  const s = await new FakeSource().start();
  t.after(() => s.close());
  return s;
}

async function getManifestBytes(r: TestRegistry, repository: string, reference: string): Promise<{ status: number; bytes: Buffer; digest: string | null }> {
  const res = await fetch(`${r.url}/v2/${repository}/manifests/${reference}`, {
    headers: { Accept: "application/vnd.oci.image.manifest.v1+json", "Ferry-Foreign-Layers": "supported" },
  });
  return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()), digest: res.headers.get("docker-content-digest") };
}

test("default config: a foreign layer is accepted without any fetch and stored byte-for-byte", async (t) => {
  const r = await startTestRegistry();
  t.after(() => r.close());
  const s = await source(t);
  const layer = blob(100);
  const url = s.put("/layer", layer.bytes);
  const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [url, "https://unreachable.example.com/layer"] }]);
  assert.equal(pushed.status, 201, pushed.body);
  assert.equal(pushed.headers.get("docker-content-digest"), pushed.digest);
  assert.equal(pushed.headers.get("warning"), null);
  assert.equal(s.requests.length, 0, "the baseline must not fetch anything");
  const got = await getManifestBytes(r, "app", "v1");
  assert.deepEqual(got.bytes, pushed.manifest);
  assert.equal(got.digest, pushed.digest);
});

test("a URL refused by the policy is a 400 MANIFEST_INVALID naming the layer, the URL and the rule", async (t) => {
  const r = await registry(t, {
    rules: [
      { match: "^https://cdn\\.example\\.com/", serve: "proxy" },
      { match: "^http://", deny: true },
    ],
  });
  const layer = blob(10);
  const bad = "http://insecure.example.com/layer.tgz";
  const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: ["https://cdn.example.com/layer.tgz", bad] }]);
  assert.equal(pushed.status, 400);
  const [error] = parseErrors(pushed.body);
  assert.equal(error!.code, "MANIFEST_INVALID");
  assert.ok(error!.message.includes(layer.digest), error!.message);
  assert.ok(error!.message.includes(bad));
  assert.ok(error!.message.includes("rules[1] (^http:\\/\\/)"), error!.message);
  assert.deepEqual(error!.detail, { digest: layer.digest, url: bad, rule: "rules[1] (^http:\\/\\/)", reason: "is denied by federation rule rules[1] (^http:\\/\\/)" });
  assert.equal((await getManifestBytes(r, "app", "v1")).status, 404);
});

test("every violation is reported, and default deny turns the rules into an allow-list", async (t) => {
  const r = await registry(t, { rules: [{ match: "^https://ok\\.example/", serve: "redirect" }], default: { deny: true } });
  const a = blob(10);
  const b = blob(11);
  const pushed = await pushForeignImage(r.url, "app", "v1", [
    { ...a, urls: ["https://ok.example/a", "https://other.example/a"] },
    { ...b, urls: ["https://evil.example/b"] },
  ]);
  assert.equal(pushed.status, 400);
  const errors = parseErrors(pushed.body);
  assert.deepEqual(errors.map((e) => [e.code, e.detail?.url, e.detail?.rule]), [
    ["MANIFEST_INVALID", "https://other.example/a", "default"],
    ["MANIFEST_INVALID", "https://evil.example/b", "default"],
  ]);
  assert.match(errors[0]!.message, /matches no federation rule/);
  const ok = await pushForeignImage(r.url, "app", "v2", [{ ...a, urls: ["https://ok.example/a"] }]);
  assert.equal(ok.status, 201, ok.body);
});

test("syntax: userinfo, fragments and disallowed schemes are refused even with no rules", async (t) => {
  const r = await registry(t, { schemes: ["https"] });
  const layer = blob(10);
  for (const [url, reason] of [
    ["https://user:secret@cdn.example.com/x", /userinfo/],
    ["https://cdn.example.com/x#part", /fragment/],
    ["http://cdn.example.com/x", /scheme "http"; allowed: https/],
    ["not a url", /not an absolute URL/],
  ] as const) {
    const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [url] }]);
    assert.equal(pushed.status, 400, url);
    const [error] = parseErrors(pushed.body);
    assert.equal(error!.code, "MANIFEST_INVALID");
    assert.match(error!.message, reason);
    assert.equal(error!.detail?.rule, "syntax");
  }
});

test("a Docker foreign layer without urls is refused with a message saying so", async (t) => {
  const r = await registry(t);
  const layer = blob(10);
  const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, mediaType: DOCKER_FOREIGN }]);
  assert.equal(pushed.status, 400);
  const [error] = parseErrors(pushed.body);
  assert.equal(error!.code, "MANIFEST_INVALID");
  assert.match(error!.message, /foreign layer without urls/);
});

test("federation off: a manifest with layers not in the registry is MANIFEST_BLOB_UNKNOWN saying federation is off", async (t) => {
  const r = await registry(t, { enabled: false });
  const layer = blob(10);
  const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: ["https://cdn.example.com/x"] }]);
  assert.equal(pushed.status, 400);
  const [error] = parseErrors(pushed.body);
  assert.equal(error!.code, "MANIFEST_BLOB_UNKNOWN");
  assert.match(error!.message, /federation is turned off/);
  assert.equal(error!.detail?.digest, layer.digest);
});

test("private repositories: deny refuses with the reason, warn adds a Warning, allow is silent", async (t) => {
  const layer = blob(10);
  const urls = ["https://cdn.example.com/x"];
  const deny = await registry(t, { privateRepositories: "deny", privateRepositoryPatterns: ["secret/**"] });
  const refused = await pushForeignImage(deny.url, "secret/team/app", "v1", [{ ...layer, urls }]);
  assert.equal(refused.status, 400);
  const [error] = parseErrors(refused.body);
  assert.equal(error!.code, "MANIFEST_INVALID");
  assert.match(error!.message, /private, but foreign layers are public by nature/);
  assert.equal((await pushForeignImage(deny.url, "public/app", "v1", [{ ...layer, urls }])).status, 201);

  const warn = await registry(t, { privateRepositories: "warn", privateRepositoryPatterns: ["secret/*"] });
  const warned = await pushForeignImage(warn.url, "secret/app", "v1", [{ ...layer, urls }]);
  assert.equal(warned.status, 201);
  assert.match(warned.headers.get("warning") ?? "", /^299 - ".*foreign layers are public by nature.*"$/);

  const allow = await registry(t, { privateRepositories: "allow", privateRepositoryPatterns: ["secret/*"] });
  const allowed = await pushForeignImage(allow.url, "secret/app", "v1", [{ ...layer, urls }]);
  assert.equal(allowed.status, 201);
  assert.equal(allowed.headers.get("warning"), null);
});

test("verify head: a URL answering 2xx with the right Content-Length verifies the layer", async (t) => {
  const s = await source(t);
  const r = await registry(t, { verify: { mode: "head" } });
  const layer = blob(500);
  const good = s.put("/good", layer.bytes);
  const missing = s.url("/missing");
  const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [missing, good] }]);
  assert.equal(pushed.status, 201, pushed.body);
  assert.deepEqual(s.requests.map((q) => [q.method, q.path]), [["HEAD", "/missing"], ["HEAD", "/good"]]);
  const mark = await r.registry.deps.meta.getForeignLayer("app", layer.digest);
  assert.equal(mark?.verification, "verified");
  assert.ok(mark!.verifiedAt! > Date.now() - 60_000);
  assert.deepEqual(mark?.manifests, [pushed.digest]);
});

test("verify head + reject: 400 listing every URL tried and what it answered", async (t) => {
  const s = await source(t);
  const r = await registry(t, { verify: { mode: "head", onFailure: "reject", timeout: "2s" } });
  const layer = blob(500);
  s.put("/wrong-size", blob(499).bytes);
  s.behave("/error", { kind: "status", status: 500 });
  const down = await new FakeSource().start();
  const downUrl = down.url("/x");
  await down.down();
  const urls = [s.url("/missing"), s.url("/error"), s.url("/wrong-size"), downUrl];
  const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls }]);
  assert.equal(pushed.status, 400);
  const [error] = parseErrors(pushed.body);
  assert.equal(error!.code, "MANIFEST_BLOB_UNKNOWN");
  for (const url of urls) assert.ok(error!.message.includes(url), url);
  assert.deepEqual(error!.detail?.attempts, [
    { url: urls[0], answer: "HTTP 404" },
    { url: urls[1], answer: "HTTP 500" },
    { url: urls[2], answer: "HTTP 200 with Content-Length 499, but the descriptor says 500" },
    { url: urls[3], answer: "connection refused" },
  ]);
  assert.equal((await getManifestBytes(r, "app", "v1")).status, 404);
});

test("verify fetch + reject: wrong bytes are caught by the digest, a stall by the timeout", async (t) => {
  const s = await source(t);
  const r = await registry(t, { verify: { mode: "fetch", onFailure: "reject", timeout: "300ms" } });
  const layer = blob(5000);
  s.put("/wrong", layer.bytes);
  s.behave("/wrong", { kind: "wrong-bytes" });
  s.put("/stall", layer.bytes);
  s.behave("/stall", { kind: "stall", afterBytes: 10 });
  const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [s.url("/wrong"), s.url("/stall")] }]);
  assert.equal(pushed.status, 400);
  const attempts = parseErrors(pushed.body)[0]!.detail?.attempts as Array<{ url: string; answer: string }>;
  assert.match(attempts[0]!.answer, /digest mismatch/);
  assert.match(attempts[1]!.answer, /stalled: no data for 300ms/);

  s.put("/ok", layer.bytes);
  const ok = await pushForeignImage(r.url, "app", "v2", [{ ...layer, urls: [s.url("/ok")] }]);
  assert.equal(ok.status, 201, ok.body);
  assert.equal((await r.registry.deps.meta.getForeignLayer("app", layer.digest))?.verification, "verified");
});

test("verify + warn: a source that is down does not stop the push; 201 with a Warning and an unverified mark", async (t) => {
  const s = await source(t);
  const r = await registry(t, { verify: { mode: "fetch", onFailure: "warn", timeout: "2s" } });
  const layer = blob(300);
  const url = s.put("/layer", layer.bytes);
  await s.down();
  const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [url] }]);
  assert.equal(pushed.status, 201, pushed.body);
  const warning = pushed.headers.get("warning") ?? "";
  assert.match(warning, /^299 - "foreign layer sha256:[0-9a-f]{64} could not be verified \(fetch\); accepted unverified: .*connection refused"$/);
  assert.ok(warning.includes(url));
  const mark = await r.registry.deps.meta.getForeignLayer("app", layer.digest);
  assert.equal(mark?.verification, "unverified");
  assert.deepEqual((await getManifestBytes(r, "app", "v1")).bytes, pushed.manifest);
});

test("marks: one per repository and layer; deleting the last manifest that references it removes it", async (t) => {
  const r = await registry(t);
  const layer = blob(10);
  const urls = ["https://cdn.example.com/x"];
  const one = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls }]);
  const two = await pushForeignImage(r.url, "app", "v2", [{ ...layer, urls }, { ...blob(5), urls }]);
  assert.equal(one.status, 201);
  assert.equal(two.status, 201);
  const meta = r.registry.deps.meta;
  const mark = await meta.getForeignLayer("app", layer.digest);
  assert.deepEqual(
    { mediaType: mark?.mediaType, size: mark?.size, urls: mark?.urls, manifests: mark?.manifests.sort() },
    { mediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", size: 10, urls, manifests: [one.digest, two.digest].sort() },
  );
  assert.equal(await meta.getForeignLayer("other", layer.digest), null);
  assert.equal((await fetch(`${r.url}/v2/app/manifests/${one.digest}`, { method: "DELETE" })).status, 202);
  assert.deepEqual((await meta.getForeignLayer("app", layer.digest))?.manifests, [two.digest]);
  assert.equal((await fetch(`${r.url}/v2/app/manifests/${two.digest}`, { method: "DELETE" })).status, 202);
  assert.equal(await meta.getForeignLayer("app", layer.digest), null);
  const blobRes = await fetch(`${r.url}/v2/app/blobs/${layer.digest}`);
  assert.equal(blobRes.status, 404);
});

test("the manifest digest is that of the pushed bytes, whatever the whitespace", async (t) => {
  const r = await registry(t);
  const layer = blob(10);
  const manifest = Buffer.from(
    `{\n  "schemaVersion": 2,\n  "mediaType": "application/vnd.oci.image.manifest.v1+json",\n  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "${sha256("{}")}", "size": 2},\n  "layers": [ {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar", "digest": "${layer.digest}", "size": 10, "urls": ["https://cdn.example.com/x"]} ]\n}\n`,
  );
  await fetch(`${r.url}/v2/app/blobs/uploads/?digest=${sha256("{}")}`, { method: "POST", body: "{}" });
  const res = await fetch(`${r.url}/v2/app/manifests/v1`, { method: "PUT", headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" }, body: new Uint8Array(manifest) });
  assert.equal(res.status, 201);
  assert.equal(res.headers.get("docker-content-digest"), sha256(manifest));
  assert.deepEqual((await getManifestBytes(r, "app", "v1")).bytes, manifest);
});
