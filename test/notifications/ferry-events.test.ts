/**
 * Ferry's own events and who caused an event: a foreign layer source turning
 * failing and recovering, the actor of an authenticated push, admin-only
 * status, and configuration errors that say what is wrong.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestRegistry } from "../helpers/registry.js";
import { loadConfig } from "../../src/config/load.js";
import { FakeSource, blob, pushForeignImage } from "../federation/helpers.js";
import { basic, bcryptHash, pushBlobAs } from "../auth/util.js";
import { Receiver } from "./receiver.js";

type After = { after(fn: () => Promise<void>): void };

async function receiver(t: After): Promise<Receiver> {
  const r = await new Receiver().start();
  t.after(() => r.close());
  return r;
}

function endpoint(url: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name: "ops", url, allowPrivate: true, timeout: "500ms", backoff: "50ms", maxBackoff: "200ms", ...extra };
}

test("a foreign layer source that starts failing sends foreign-source-failed, and foreign-source-recovered when it answers again", async (t) => {
  const hook = await receiver(t);
  const source = await new FakeSource().start();
  t.after(() => source.close());
  const r = await startTestRegistry({
    federation: { rules: [{ match: "^http://127\\.0\\.0\\.1:", serve: "redirect" }], verify: { mode: "head", onFailure: "warn" }, proxy: { allowPrivateNetworks: true, timeout: "1s" } },
    notifications: { pollInterval: "50ms", endpoints: [endpoint(hook.url, { events: ["foreign-source-failed", "foreign-source-recovered"] })] },
  });
  t.after(() => r.close());
  const layer = blob(64);
  const url = source.put("/layer", layer.bytes);
  source.behave("/layer", { kind: "status", status: 503 });
  for (const tag of ["v1", "v2"]) {
    const push = await pushForeignImage(r.url, "team/app", tag, [{ ...layer, urls: [url] }]);
    assert.equal(push.status, 201, push.body);
  }
  await hook.until(() => hook.accepted.length >= 1, "foreign-source-failed");
  source.behave("/layer", { kind: "ok" });
  const verify = await fetch(`${r.url}/ferry/v1/foreign/verify?repository=team/app&reference=v1&mode=head`, { method: "POST" });
  assert.equal(verify.status, 200, await verify.text());
  await hook.until(() => hook.accepted.length >= 2, "foreign-source-recovered");
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.deepEqual(hook.accepted.map((e) => e.action), ["foreign-source-failed", "foreign-source-recovered"], "one event per change, not per failed attempt");
  const [failed, recovered] = hook.accepted;
  assert.equal(failed!.target.url, url);
  assert.equal(failed!.ferry!.state, "failing");
  assert.match(String(failed!.ferry!.error), /503/);
  assert.equal(recovered!.target.url, url);
  assert.equal(recovered!.ferry!.previousState, "failing");
});

test("an authenticated push names its user as the actor; status is for admins only", async (t) => {
  const hook = await receiver(t);
  const r = await startTestRegistry({
    auth: {
      users: { root: { passwordHash: bcryptHash("root-secret") }, dev: { passwordHash: bcryptHash("dev-secret") } },
      rules: [{ repositories: ["team/**"], users: ["dev"], actions: ["pull", "push"] }],
      admins: { users: ["root"] },
    },
    notifications: { pollInterval: "50ms", endpoints: [endpoint(hook.url)] },
  });
  t.after(() => r.close());
  const pushed = await pushBlobAs(r.url, "team/app", Buffer.from("by dev"), basic("dev", "dev-secret"));
  assert.equal(pushed.status, 201);
  await hook.until(() => hook.accepted.length === 1, "the push event");
  assert.deepEqual(hook.accepted[0]!.actor, { name: "dev" });
  assert.equal(hook.accepted[0]!.request!.method, "POST");

  const anonymous = await fetch(`${r.url}/ferry/v1/notifications`);
  assert.equal(anonymous.status, 401);
  const dev = await fetch(`${r.url}/ferry/v1/notifications`, { headers: { Authorization: basic("dev", "dev-secret") } });
  assert.equal(dev.status, 403);
  const root = await fetch(`${r.url}/ferry/v1/notifications`, { headers: { Authorization: basic("root", "root-secret") } });
  assert.equal(root.status, 200);
  const body = (await root.json()) as { endpoints: Array<{ name: string; delivered: number }> };
  assert.deepEqual(body.endpoints.map((e) => [e.name, e.delivered]), [["ops", 1]]);
});

test("without endpoints nothing is opened and the status is an empty list", async (t) => {
  const r = await startTestRegistry();
  t.after(() => r.close());
  const res = await fetch(`${r.url}/ferry/v1/notifications`);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { endpoints: [] });
  const { readdir } = await import("node:fs/promises");
  assert.equal((await readdir(r.dataDir)).some((f) => f.includes("notifications")), false, "no queue file");
});

test("configuration mistakes are named with their key", () => {
  const load = (notifications: unknown) => loadConfig({ env: {}, overrides: { notifications } as Record<string, unknown> });
  const good = { name: "ci", url: "https://ci.example.com/hook" };
  assert.throws(() => load({ endpoints: [good, { ...good }] }), /notifications\.endpoints\.1\.name.*"ci" names two endpoints/s);
  assert.throws(() => load({ endpoints: [{ ...good, url: "ftp://ci.example.com/" }] }), /notifications\.endpoints\.0\.url.*http:\/\/ or https:\/\//s);
  assert.throws(() => load({ endpoints: [{ ...good, events: ["push", "pushed"] }] }), /notifications\.endpoints\.0\.events\.1/);
  assert.throws(() => load({ endpoints: [{ ...good, headers: { "X-Token": "a\r\nInjected: yes" } }] }), /notifications\.endpoints\.0\.headers.*line breaks/s);
  assert.throws(() => load({ endpoints: [{ ...good, headers: { "Content-Type": "text/plain" } }] }), /set by Ferry itself/);
  assert.throws(() => load({ endpoints: [{ ...good, hmacSecret: "short" }] }), /notifications\.endpoints\.0\.hmacSecret.*at least 16/s);
  assert.throws(() => load({ endpoints: [{ ...good, timeout: "forever" }] }), /notifications\.endpoints\.0\.timeout.*not a duration/s);
  assert.throws(() => load({ endpoints: [{ ...good, retries: 3 }] }), /retries/);
  assert.throws(() => load({ endpoints: [{ ...good, backoff: "10s", maxBackoff: "1s" }] }), /maxBackoff.*must not be below backoff/s);
  const loaded = load({ endpoints: [good] });
  assert.deepEqual(
    { timeout: loaded.notifications.endpoints[0]!.timeout, allowPrivate: loaded.notifications.endpoints[0]!.allowPrivate, events: loaded.notifications.endpoints[0]!.events },
    { timeout: 5000, allowPrivate: false, events: undefined },
  );
});
