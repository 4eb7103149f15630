/**
 * Every redirect hop is checked against the URL rules, not only against the
 * address guard: an allowed source (127.0.0.2) that answers 302 towards a
 * denied host (127.0.0.3) is refused in push-time verification, in the admin
 * verify endpoint and in the proxy, and the denied host never sees a request.
 * Redirect mode only ever sends a client to a URL that passes the policy.
 * (Both hosts are loopback, so the address guard is lifted with
 * allowPrivateNetworks: what is tested here is the rules.)
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { FakeSource, blob, parseErrors, pushForeignImage } from "./helpers.js";

const DENY_3 = { match: "^http://127\\.0\\.0\\.3[:/]", deny: true };
const PROXY_2 = { match: "^http://127\\.0\\.0\\.2[:/]", serve: "proxy" };

async function sources(t: { after(fn: () => Promise<void>): void }) {
  const allowed = await new FakeSource("127.0.0.2").start();
  const denied = await new FakeSource("127.0.0.3").start();
  t.after(() => allowed.close());
  t.after(() => denied.close());
  const layer = blob(200);
  denied.put("/layer", layer.bytes);
  allowed.behave("/layer", { kind: "redirect", location: denied.url("/layer") });
  // The same hop spelled so that a rule matched against the written Location would miss it.
  allowed.behave("/decimal", { kind: "redirect", location: `http://2130706435:${denied.port}/layer` });
  allowed.behave("/upper", { kind: "redirect", location: `HTTP://127.0.0.3.:${denied.port}/layer`, status: 307 });
  return { allowed, denied, layer };
}

async function registry(t: { after(fn: () => Promise<void>): void }, federation: Record<string, unknown>): Promise<TestRegistry> {
  const r = await startTestRegistry({ federation: { proxy: { allowPrivateNetworks: true, timeout: "2s" }, ...federation } });
  t.after(() => r.close());
  return r;
}

test("verify at push: a 302 from an allowed source to a denied host fails verification; the denied host is never contacted", async (t) => {
  const { allowed, denied, layer } = await sources(t);
  const r = await registry(t, { rules: [DENY_3, PROXY_2], verify: { mode: "fetch", onFailure: "reject" } });
  for (const [i, path] of ["/layer", "/decimal", "/upper"].entries()) {
    const pushed = await pushForeignImage(r.url, "app", `v${i}`, [{ ...layer, urls: [allowed.url(path)] }]);
    assert.equal(pushed.status, 400, pushed.body);
    const [error] = parseErrors(pushed.body);
    assert.equal(error!.code, "MANIFEST_BLOB_UNKNOWN");
    const attempts = error!.detail?.attempts as Array<{ url: string; answer: string }>;
    assert.equal(attempts.length, 1);
    assert.equal(attempts[0]!.url, allowed.url(path));
    assert.match(attempts[0]!.answer, new RegExp(`redirected to http://127\\.0\\.0\\.3:${denied.port}/layer, which is denied by federation rule rules\\[0\\]`), path);
    assert.equal((await fetch(`${r.url}/v2/app/manifests/v${i}`)).status, 404, "a refused push stores nothing");
  }
  assert.deepEqual(await r.registry.deps.meta.listForeignLayers("app"), []);
  assert.equal(allowed.requests.length, 3);
  assert.equal(denied.requests.length, 0, "the denied host must never see a request");
  assert.equal(denied.connections, 0);
});

test("verify at push, the control: without the deny rule the same redirect is followed and the layer verifies", async (t) => {
  const { allowed, denied, layer } = await sources(t);
  const r = await registry(t, { rules: [PROXY_2], verify: { mode: "fetch", onFailure: "reject" } });
  const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [allowed.url("/layer")] }]);
  assert.equal(pushed.status, 201, pushed.body);
  assert.equal(denied.gets("/layer"), 1);
});

test("admin verify: the hop rule applies to re-verification too", async (t) => {
  const { allowed, denied, layer } = await sources(t);
  const r = await registry(t, { rules: [DENY_3, PROXY_2] });
  const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [allowed.url("/layer")] }]);
  assert.equal(pushed.status, 201, pushed.body);
  const res = await fetch(`${r.url}/ferry/v1/foreign/verify?repository=app&reference=v1&mode=fetch`, { method: "POST" });
  assert.equal(res.status, 200);
  const result = (await res.json()) as { ok: boolean; layers: Array<{ attempts: Array<{ answer: string }> }> };
  assert.equal(result.ok, false);
  assert.match(result.layers[0]!.attempts[0]!.answer, /which is denied by federation rule rules\[0\]/);
  assert.equal(denied.requests.length, 0);
});

test("proxy: a 302 from an allowed source to a denied host is a 502 naming the rule; the denied host is never contacted", async (t) => {
  const { allowed, denied, layer } = await sources(t);
  const r = await registry(t, { rules: [DENY_3, PROXY_2] });
  for (const [i, path] of ["/layer", "/decimal", "/upper"].entries()) {
    const pushed = await pushForeignImage(r.url, "app", `v${i}`, [{ ...layer, urls: [allowed.url(path)] }]);
    assert.equal(pushed.status, 201, pushed.body);
  }
  for (const cache of [false, true]) {
    const r2 = cache ? await registry(t, { rules: [DENY_3, { ...PROXY_2, cache: true }] }) : r;
    if (cache) await pushForeignImage(r2.url, "app", "v0", [{ ...layer, urls: [allowed.url("/layer")] }]);
    const res = await fetch(`${r2.url}/v2/app/blobs/${layer.digest}`);
    assert.equal(res.status, 502);
    const [error] = parseErrors(await res.text());
    assert.equal(error!.code, "UNAVAILABLE");
    const attempts = error!.detail?.attempts as Array<{ url: string; error: string }>;
    assert.match(attempts[0]!.error, /which is denied by federation rule rules\[0\]/);
  }
  assert.equal(denied.requests.length, 0, "the denied host must never see a request");
  // The control: with the rule lifted the proxy follows the same redirect and serves the verified bytes.
  const open = await registry(t, { rules: [PROXY_2] });
  await pushForeignImage(open.url, "app", "v1", [{ ...layer, urls: [allowed.url("/upper")] }]);
  const res = await fetch(`${open.url}/v2/app/blobs/${layer.digest}`);
  assert.equal(res.status, 200);
  assert.deepEqual(Buffer.from(await res.arrayBuffer()), layer.bytes);
});

test("redirect mode: Location is the canonical URL that passed the policy, never a spelling the current rules deny", async (t) => {
  const { allowed, layer } = await sources(t);
  const dir = await mkdtemp(join(tmpdir(), "ferry-hops-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const sneaky = `http://LOCALHOST.:${allowed.port}/layer`;
  const honest = allowed.url("/other");

  const before = await startTestRegistry({ federation: { default: { serve: "redirect" } } }, dir);
  const pushed = await pushForeignImage(before.url, "app", "v1", [{ ...layer, urls: [sneaky, honest] }]);
  assert.equal(pushed.status, 201, pushed.body);
  const first = await fetch(`${before.url}/v2/app/blobs/${layer.digest}`, { redirect: "manual" });
  assert.equal(first.status, 307);
  assert.equal(first.headers.get("location"), `http://127.0.0.1:${allowed.port}/layer`, "the canonical form is what the policy judged");
  await before.close();

  // The operator adds a deny rule for 127.0.0.1: the stored localhost spelling must no longer be redirected to.
  const after = await startTestRegistry({ federation: { rules: [{ match: "^http://127\\.0\\.0\\.1[:/]", deny: true }], default: { serve: "redirect" } } }, dir);
  t.after(() => after.close());
  const second = await fetch(`${after.url}/v2/app/blobs/${layer.digest}`, { redirect: "manual" });
  assert.equal(second.status, 307);
  assert.equal(second.headers.get("location"), honest);
  const listed = (await (await fetch(`${after.url}/ferry/v1/foreign/layers?repository=app`)).json()) as { layers: Array<{ policy: Array<{ url: string; allowed: boolean; rule: string }> }> };
  assert.deepEqual(listed.layers[0]!.policy.map((p) => [p.url, p.allowed, p.rule]), [
    [sneaky, false, "rules[0] (^http:\\/\\/127\\.0\\.0\\.1[:/])"],
    [honest, true, "default"],
  ]);
});
