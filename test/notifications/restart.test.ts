/**
 * A real `ferry serve` with a backlog for a failing receiver: stopped
 * (SIGTERM, two workers sharing the queue) and killed (SIGKILL) mid-backlog,
 * then restarted, it delivers every event exactly once, in order per
 * repository — nothing lost with the process, nothing sent twice by two
 * workers.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServeProcess, type ServeProcess } from "../helpers/serve-process.js";
import { OCI_MANIFEST, pushBlob, pushManifest, sha256 } from "../http/client.js";
import { Receiver } from "./receiver.js";

test("a restart mid-backlog delivers the rest, exactly once and in order, with two workers and after a SIGKILL", async (t) => {
  const hook = await new Receiver().start();
  t.after(() => hook.close());
  let accept = 3;
  hook.behaviour = () => (hook.accepted.length < accept ? { kind: "ok" } : { kind: "status", status: 500 });
  const data = await mkdtemp(join(tmpdir(), "ferry-notify-serve-"));
  t.after(() => rm(data, { recursive: true, force: true }));
  const config = join(data, "ferry.yaml");
  await writeFile(
    config,
    JSON.stringify({
      notifications: {
        pollInterval: "100ms",
        // One event per request: the test counts accepted events to decide when the receiver starts failing.
        endpoints: [{ name: "ci", url: hook.url, allowPrivate: true, timeout: "1s", backoff: "100ms", maxBackoff: "300ms", concurrency: 2, maxBatch: 1 }],
      },
    }),
  );
  let serve: ServeProcess | null = null;
  t.after(() => serve?.kill());
  const expected = new Map<string, string[]>();
  const push = async (base: string, repo: string, tags: string[]) => {
    const configBlob = Buffer.from(`{"repo":"${repo}"}`);
    await pushBlob(base, repo, configBlob);
    for (const tag of tags) {
      const manifest = { schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(configBlob), size: configBlob.length }, layers: [], annotations: { tag } };
      await pushManifest(base, repo, tag, manifest, OCI_MANIFEST);
    }
    expected.set(repo, [...(expected.get(repo) ?? []), "(blob)", ...tags]);
  };

  // Two workers: the first three events go out, the rest pile up behind failures; then SIGTERM.
  serve = await startServeProcess({ data, workers: 2, args: ["--config", config] });
  await push(serve.url, "team/one", ["a1", "a2", "a3", "a4"]);
  await push(serve.url, "team/two", ["b1", "b2", "b3"]);
  await hook.until(() => hook.accepted.length === 3 && hook.deliveries.length >= 6, "three accepted, then failures");
  await serve.stop();

  // One worker, more events, still failing; then SIGKILL, as a crash would.
  serve = await startServeProcess({ data, args: ["--config", config] });
  await push(serve.url, "team/three", ["c1", "c2"]);
  const before = hook.deliveries.length;
  await hook.until(() => hook.deliveries.length >= before + 3, "more failed attempts after the restart");
  await serve.kill();
  assert.equal(hook.accepted.length, 3);

  // The receiver recovers; a fresh start delivers everything left.
  accept = Number.POSITIVE_INFINITY;
  serve = await startServeProcess({ data, workers: 2, args: ["--config", config] });
  const total = [...expected.values()].reduce((n, events) => n + events.length, 0);
  await hook.until(() => hook.accepted.length >= total, `all ${total} events`, 30_000);
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal(hook.accepted.length, total, "nothing delivered twice");
  assert.equal(new Set(hook.accepted.map((e) => e.id)).size, total);
  for (const [repo, events] of expected) {
    const got = hook.accepted.filter((e) => e.target.repository === repo).map((e) => e.target.tag ?? "(blob)");
    assert.deepEqual(got, events, `${repo} in push order`);
  }
  const status = (await (await fetch(`${serve.url}/ferry/v1/notifications`)).json()) as { endpoints: Array<{ delivered: number; pending: number; failedAttempts: number }> };
  assert.equal(status.endpoints[0]!.delivered, total, "counted once across processes and restarts");
  assert.equal(status.endpoints[0]!.pending, 0);
  assert.ok(status.endpoints[0]!.failedAttempts >= 6);
  await serve.stop();
  serve = null;
});
