/**
 * Webhooks (issue 18, "Events and webhooks"): the distribution envelope for
 * pushes, pulls, deletes and mounts; a receiver that fails, hangs and
 * recovers loses nothing and sees each repository's events in order; HMAC
 * signatures; event filters; the SSRF rules; status and metrics.
 */
import { test } from "node:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { OCI_MANIFEST, makeImage, pushBlob, pushManifest, req, sha256 } from "../http/client.js";
import { Receiver, verifySignature, type ReceivedEvent } from "./receiver.js";
import { EndpointClient } from "../../src/notifications/deliver.js";
import { endpointSchema } from "../../src/notifications/config.js";

type After = { after(fn: () => Promise<void>): void };

const SECRET = "a-webhook-secret-of-some-length";

async function receiver(t: After): Promise<Receiver> {
  const r = await new Receiver().start();
  t.after(() => r.close());
  return r;
}

/** A registry whose endpoints retry fast (tests wait on real time). */
async function registryWith(t: After, endpoints: Array<Record<string, unknown>>, extra: Record<string, unknown> = {}, dataDir?: string): Promise<TestRegistry> {
  const r = await startTestRegistry({
    notifications: {
      pollInterval: "50ms",
      ...extra,
      endpoints: endpoints.map((e) => ({ allowPrivate: true, timeout: "500ms", backoff: "50ms", maxBackoff: "200ms", ...e })),
    },
  }, dataDir);
  t.after(() => r.close());
  return r;
}

interface EndpointStatus {
  name: string;
  url: string;
  delivered: number;
  failedAttempts: number;
  givenUp: number;
  dropped: number;
  pending: number;
  lastSuccessAt: number | null;
  lastError: string | null;
}

async function status(r: TestRegistry): Promise<EndpointStatus[]> {
  const res = await req(`${r.url}/ferry/v1/notifications`);
  assert.equal(res.status, 200);
  return ((await res.json()) as { endpoints: EndpointStatus[] }).endpoints;
}

test("a manifest push sends distribution's envelope: content type, event fields, request, source; blobs before the manifest", async (t) => {
  const hook = await receiver(t);
  const r = await registryWith(t, [{ name: "ci", url: hook.url }]);
  const manifest = await makeImage(r.url, "team/app");
  const pushed = await pushManifest(r.url, "team/app", "v1", manifest, OCI_MANIFEST);
  await hook.until(() => hook.accepted.length >= 3, "config, layer and manifest push events");
  const delivery = hook.deliveries[0]!;
  assert.equal(delivery.headers["content-type"], "application/vnd.docker.distribution.events.v1+json");
  assert.deepEqual(hook.accepted.map((e) => e.action), ["push", "push", "push"]);
  const [config, layer, image] = hook.accepted as [ReceivedEvent, ReceivedEvent, ReceivedEvent];
  const descriptors = [manifest.config, ...(manifest.layers as unknown[])] as Array<{ digest: string; size: number }>;
  assert.deepEqual([config.target.digest, layer.target.digest], descriptors.map((d) => d.digest), "blob events in push order");
  assert.deepEqual(config.target, {
    mediaType: "application/octet-stream",
    size: descriptors[0]!.size,
    digest: descriptors[0]!.digest,
    length: descriptors[0]!.size,
    repository: "team/app",
    url: `${r.url}/v2/team/app/blobs/${descriptors[0]!.digest}`,
  });
  assert.deepEqual(image.target, {
    mediaType: OCI_MANIFEST,
    size: pushed.bytes.length,
    digest: pushed.digest,
    length: pushed.bytes.length,
    repository: "team/app",
    url: `${r.url}/v2/team/app/manifests/${pushed.digest}`,
    tag: "v1",
  });
  assert.match(image.id, /^[0-9a-f-]{36}$/);
  assert.ok(Math.abs(Date.parse(image.timestamp) - Date.now()) < 60_000, "an RFC 3339 timestamp of now");
  assert.equal(image.request!.method, "PUT");
  assert.equal(image.request!.host, r.host);
  assert.match(image.request!.addr, /^127\.0\.0\.1:\d+$/, "the client as host:port, as distribution writes it");
  assert.match(image.request!.id, /\S/);
  assert.equal(typeof image.request!.useragent, "string");
  assert.deepEqual(image.actor, {}, "anonymous");
  assert.equal(image.source.addr.endsWith(`:${r.registry.port}`), true, image.source.addr);
  assert.match(image.source.instanceID, /^[0-9a-f-]{36}$/);
  assert.equal(new Set(hook.accepted.map((e) => e.id)).size, 3, "every event has its own id");
});

test("pull, delete and mount events; the default filter leaves pulls out, an explicit one sends only what it names", async (t) => {
  const all = await receiver(t);
  const defaults = await receiver(t);
  const deletes = await receiver(t);
  const r = await registryWith(t, [
    { name: "all", url: all.url, events: ["push", "pull", "delete", "mount"] },
    { name: "defaults", url: defaults.url },
    { name: "deletes", url: deletes.url, events: ["delete"] },
  ]);
  const layer = Buffer.from("mountable layer");
  const digest = await pushBlob(r.url, "src/repo", layer);
  const mount = await req(`${r.url}/v2/dst/repo/blobs/uploads/?mount=${digest}&from=src/repo`, { method: "POST", headers: { "Content-Length": "0" } });
  assert.equal(mount.status, 201);
  const pulled = await req(`${r.url}/v2/dst/repo/blobs/${digest}`);
  assert.equal(pulled.status, 200);
  await pulled.arrayBuffer();
  const head = await req(`${r.url}/v2/dst/repo/blobs/${digest}`, { method: "HEAD" });
  assert.equal(head.status, 200, "a HEAD is no pull");
  const deleted = await req(`${r.url}/v2/dst/repo/blobs/${digest}`, { method: "DELETE" });
  assert.equal(deleted.status, 202);

  await all.until(() => all.accepted.length >= 4, "push, mount, pull and delete");
  await defaults.until(() => defaults.accepted.length >= 3, "push, mount and delete");
  await deletes.until(() => deletes.accepted.length >= 1, "the delete");
  // Events of different repositories may interleave; within one repository they keep their order.
  const byRepo = (events: ReceivedEvent[], repo: string) => events.filter((e) => e.target.repository === repo).map((e) => e.action);
  assert.deepEqual(byRepo(all.accepted, "src/repo"), ["push"]);
  assert.deepEqual(byRepo(all.accepted, "dst/repo"), ["mount", "pull", "delete"]);
  const mounted = all.accepted.find((e) => e.action === "mount")!;
  assert.deepEqual(
    { digest: mounted.target.digest, size: mounted.target.size, from: mounted.target.fromRepository },
    { digest, size: layer.length, from: "src/repo" },
  );
  const pull = all.accepted.find((e) => e.action === "pull")!;
  assert.equal(pull.request!.method, "GET");
  assert.deepEqual(defaults.accepted.map((e) => e.action).sort(), ["delete", "mount", "push"], "no pull without asking for it");
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.deepEqual(deletes.accepted.map((e) => e.action), ["delete"], "only the subscribed action");
  assert.equal(deletes.accepted[0]!.target.digest, digest);
});

test("manifest pull and tag delete events name the tag", async (t) => {
  const hook = await receiver(t);
  const r = await registryWith(t, [{ name: "ci", url: hook.url, events: ["pull", "delete"] }]);
  const pushed = await pushManifest(r.url, "team/app", "v1", await makeImage(r.url, "team/app"), OCI_MANIFEST);
  const get = await req(`${r.url}/v2/team/app/manifests/v1`, { headers: { Accept: OCI_MANIFEST } });
  assert.equal(get.status, 200);
  await get.arrayBuffer();
  const del = await req(`${r.url}/v2/team/app/manifests/v1`, { method: "DELETE" });
  assert.equal(del.status, 202);
  await hook.until(() => hook.accepted.length >= 2, "pull and delete");
  const [pull, deletion] = hook.accepted as [ReceivedEvent, ReceivedEvent];
  assert.equal(pull.action, "pull");
  assert.deepEqual({ digest: pull.target.digest, tag: pull.target.tag, mediaType: pull.target.mediaType, size: pull.target.size }, {
    digest: pushed.digest,
    tag: "v1",
    mediaType: OCI_MANIFEST,
    size: pushed.bytes.length,
  });
  assert.equal(deletion.action, "delete");
  assert.deepEqual({ repository: deletion.target.repository, tag: deletion.target.tag }, { repository: "team/app", tag: "v1" });
});

test("a receiver that fails (500), hangs past the timeout and recovers gets every event once accepted, each repository in order", async (t) => {
  const hook = await receiver(t);
  // 6 failures, then 3 hangs, then 4 more failures, then everything accepted.
  hook.behaviour = (n) => (n < 6 ? { kind: "status", status: 500 } : n < 9 ? { kind: "hang" } : n < 13 ? { kind: "status", status: 503 } : { kind: "ok" });
  const r = await registryWith(t, [{ name: "flaky", url: hook.url, timeout: "300ms", concurrency: 3, hmacSecret: SECRET }]);
  const repos = ["a/one", "b/two", "c/three"];
  const expected = new Map<string, string[]>();
  // Three repositories pushed concurrently, each a sequence of tags.
  await Promise.all(
    repos.map(async (repo) => {
      const config = Buffer.from(`{"repo":"${repo}"}`);
      await pushBlob(r.url, repo, config);
      const tags: string[] = [];
      for (let i = 0; i < 6; i++) {
        const manifest = { schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length }, layers: [], annotations: { i: String(i) } };
        await pushManifest(r.url, repo, `t${i}`, manifest, OCI_MANIFEST);
        tags.push(`t${i}`);
      }
      expected.set(repo, tags);
    }),
  );
  const total = repos.length * 7;
  await hook.until(() => hook.accepted.length >= total, `all ${total} events accepted`, 60_000);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(hook.accepted.length, total, "nothing accepted twice");
  assert.equal(new Set(hook.accepted.map((e) => e.id)).size, total);
  for (const repo of repos) {
    const events = hook.accepted.filter((e) => e.target.repository === repo);
    assert.equal(events[0]!.target.mediaType, "application/octet-stream", `${repo}: the config blob first`);
    assert.deepEqual(events.slice(1).map((e) => e.target.tag), expected.get(repo), `${repo}: tags in push order`);
  }
  for (const delivery of hook.deliveries) {
    assert.ok(verifySignature(SECRET, delivery.body, delivery.headers["ferry-signature-256"]), "every delivery, retries included, is signed");
  }
  assert.ok(!verifySignature("another-secret-entirely!", hook.deliveries[0]!.body, hook.deliveries[0]!.headers["ferry-signature-256"]));
  const [flaky] = await status(r);
  assert.equal(flaky!.delivered, total);
  assert.equal(flaky!.pending, 0);
  assert.equal(flaky!.failedAttempts, 13, "6 answers of 500, 3 timeouts, 4 answers of 503");
  assert.equal(flaky!.givenUp, 0);
  assert.ok(flaky!.lastSuccessAt! > 0);
  assert.match(flaky!.lastError!, /answered 503/);
  const metrics = await (await req(`${r.url}/metrics`)).text();
  assert.match(metrics, new RegExp(`ferry_notifications_delivered_total\\{endpoint="flaky"\\} ${total}\\b`));
  assert.match(metrics, /ferry_notifications_failed_attempts_total\{endpoint="flaky"\} 13\b/);
  assert.match(metrics, /ferry_notifications_pending\{endpoint="flaky"\} 0\b/);
});

test("a timeout is a failed attempt with the reason on the status page", async (t) => {
  const hook = await receiver(t);
  hook.behaviour = (n) => (n < 1 ? { kind: "hang" } : { kind: "ok" });
  const r = await registryWith(t, [{ name: "slow", url: hook.url, timeout: "200ms" }]);
  await pushBlob(r.url, "team/app", "one blob");
  await hook.until(() => hook.accepted.length === 1, "the retried delivery");
  const [slow] = await status(r);
  assert.equal(slow!.failedAttempts, 1);
  assert.match(slow!.lastError!, /timed out after 200ms/);
});

test("a full queue drops the oldest events and counts them; maxAttempts gives an event up", async (t) => {
  const hook = await receiver(t);
  let failing = true;
  hook.behaviour = () => (failing ? { kind: "status", status: 500 } : { kind: "ok" });
  const data = await mkdtemp(join(tmpdir(), "ferry-notify-"));
  t.after(() => rm(data, { recursive: true, force: true }));
  const r = await registryWith(t, [{ name: "small", url: hook.url, backoff: "1s", maxBackoff: "1s" }], { queueSize: 3 }, data);
  const digests: string[] = [];
  for (let i = 0; i < 5; i++) digests.push(await pushBlob(r.url, `team/r${i}`, `blob ${i}`));
  const [small] = await status(r);
  assert.equal(small!.dropped, 2);
  assert.equal(small!.pending, 3);
  const metrics = await (await req(`${r.url}/metrics`)).text();
  assert.match(metrics, /ferry_notifications_dropped_total\{endpoint="small"\} 2\b/);
  failing = false;
  await r.close();
  // A restart over the same data: the three newest are still queued and now go out.
  const again = await startTestRegistry(
    { notifications: { pollInterval: "50ms", queueSize: 3, endpoints: [{ name: "small", url: hook.url, allowPrivate: true, backoff: "50ms" }] } },
    data,
  );
  t.after(() => again.close());
  await hook.until(() => hook.accepted.length === 3, "the three newest events");
  assert.deepEqual(hook.accepted.map((e) => e.target.digest).sort(), digests.slice(2).sort());

  const giveUp = await receiver(t);
  giveUp.behaviour = () => ({ kind: "status", status: 500 });
  const r2 = await registryWith(t, [{ name: "twice", url: giveUp.url, maxAttempts: 2 }]);
  await pushBlob(r2.url, "team/app", "doomed");
  await giveUp.until(() => giveUp.deliveries.length >= 2, "two attempts");
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.equal(giveUp.deliveries.length, 2, "no third attempt");
  const [twice] = await status(r2);
  assert.deepEqual({ givenUp: twice!.givenUp, pending: twice!.pending, failed: twice!.failedAttempts }, { givenUp: 1, pending: 0, failed: 2 });
});

test("garbage collection sends a gc event with what it deleted", async (t) => {
  const hook = await receiver(t);
  const r = await registryWith(t, [{ name: "ops", url: hook.url, events: ["gc"] }]);
  await pushBlob(r.url, "team/app", "unreferenced");
  const report = await r.registry.gc({ gracePeriodMs: 0 });
  await hook.until(() => hook.accepted.length === 1, "the gc event");
  const [gc] = hook.accepted as [ReceivedEvent];
  assert.equal(gc.action, "gc");
  assert.equal(gc.request, undefined, "no request caused it");
  assert.deepEqual(gc.ferry, { manifestsDeleted: report.manifestsDeleted, linksDeleted: report.linksDeleted, blobsDeleted: report.blobsDeleted, untrackedDeleted: report.untrackedDeleted });
  assert.equal(gc.ferry!.linksDeleted, 1);
});

test("endpoint URLs follow the SSRF rules: a forbidden address literal stops start-up without allowPrivate", async (t) => {
  const hook = await receiver(t);
  await assert.rejects(
    startTestRegistry({ notifications: { endpoints: [{ name: "inside", url: hook.url }] } }),
    (error: Error) => /notifications\.endpoints\.0\.url: refused to connect to 127\.0\.0\.1: it is a loopback address.*allowPrivate: true/.test(error.message),
  );
  await assert.rejects(
    startTestRegistry({ notifications: { endpoints: [{ name: "meta", url: "http://169.254.169.254/latest" }] } }),
    /notifications\.endpoints\.0\.url: refused to connect to 169\.254\.169\.254: it is a link-local address/,
  );
  assert.equal(hook.deliveries.length, 0);
});

test("a name that resolves to a private address is refused at delivery unless allowPrivate is set", async (t) => {
  const hook = await receiver(t);
  const endpoint = endpointSchema.parse({ name: "named", url: `http://hooks.example.test:${hook.port}/hook` });
  const toLoopback = { resolve: async () => [{ address: "127.0.0.1", family: 4 as const }] };
  const refused = new EndpointClient(endpoint, toLoopback);
  t.after(() => refused.close());
  const outcome = await refused.send(Buffer.from('{"events":[]}'));
  assert.deepEqual(outcome, { ok: false, error: "refused to connect to 127.0.0.1: it is a loopback address" });
  assert.equal(hook.deliveries.length, 0, "no connection reached the receiver");
  const allowed = new EndpointClient({ ...endpoint, allowPrivate: true }, toLoopback);
  t.after(() => allowed.close());
  assert.deepEqual(await allowed.send(Buffer.from('{"events":[]}')), { ok: true, status: 200 });
  assert.equal(hook.deliveries.length, 1);
});

test("a redirecting endpoint is a failure, not followed", async (t) => {
  const target = await receiver(t);
  const { createServer } = await import("node:http");
  const redirector = createServer((_req, res) => res.writeHead(307, { Location: target.url }).end());
  await new Promise<void>((resolve) => redirector.listen(0, "127.0.0.1", resolve));
  t.after(() => new Promise<void>((resolve) => redirector.close(() => resolve())));
  const port = (redirector.address() as { port: number }).port;
  const r = await registryWith(t, [{ name: "moved", url: `http://127.0.0.1:${port}/hook` }]);
  await pushBlob(r.url, "team/app", "goes nowhere");
  let moved: EndpointStatus | undefined;
  for (let i = 0; i < 100 && !moved?.lastError; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    [moved] = await status(r);
  }
  assert.match(moved!.lastError!, /redirect/);
  assert.equal(target.deliveries.length, 0);
});

test("status needs admin access and hides header values, the secret and the URL's query", async (t) => {
  const hook = await receiver(t);
  const r = await registryWith(t, [
    { name: "secretive", url: `${hook.url}?token=hunter2-in-the-query`, headers: { Authorization: "Bearer top-secret-token" }, hmacSecret: SECRET },
  ]);
  const res = await req(`${r.url}/ferry/v1/notifications`);
  const text = await res.text();
  assert.equal(res.status, 200);
  for (const secret of ["hunter2", "top-secret-token", SECRET]) assert.equal(text.includes(secret), false, `${secret} leaked`);
  assert.equal((JSON.parse(text) as { endpoints: EndpointStatus[] }).endpoints[0]!.url, hook.url);
  await pushBlob(r.url, "team/app", "x");
  await hook.until(() => hook.accepted.length === 1, "the delivery");
  assert.equal(hook.deliveries[0]!.headers.authorization, "Bearer top-secret-token", "configured headers are sent");
});

test("a receiver that drips its answer is cut off at twice the timeout, as a failed attempt", async (t) => {
  const { createServer } = await import("node:net");
  const timers = new Set<NodeJS.Timeout>();
  const dripper = createServer((socket) => {
    socket.on("error", () => undefined);
    socket.once("data", () => {
      socket.write("HTTP/1.1 200 OK\r\nX-Slow: ");
      // One byte every 100 ms: never silent for the 300 ms timeout, never finished.
      const timer = setInterval(() => socket.write("a"), 100);
      timers.add(timer);
      socket.on("close", () => clearInterval(timer));
    });
  });
  await new Promise<void>((resolve) => dripper.listen(0, "127.0.0.1", resolve));
  t.after(() => {
    for (const timer of timers) clearInterval(timer);
    return new Promise<void>((resolve) => dripper.close(() => resolve()));
  });
  const port = (dripper.address() as { port: number }).port;
  const endpoint = endpointSchema.parse({ name: "drip", url: `http://127.0.0.1:${port}/hook`, allowPrivate: true, timeout: "300ms" });
  const client = new EndpointClient(endpoint);
  t.after(() => client.close());
  const started = Date.now();
  const outcome = await client.send(Buffer.from('{"events":[]}'));
  const took = Date.now() - started;
  assert.deepEqual(outcome, { ok: false, error: "no complete answer in time" });
  assert.ok(took >= 550 && took < 3_000, `cut off after ${took} ms`);
});
