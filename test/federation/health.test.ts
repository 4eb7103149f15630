/**
 * Source health per URL (issue item 5): states defined and computed the same
 * way in memory and in the store, policy refusals never counted, and the
 * misleading "healthy with 0 ok / 2 failed" host record gone.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { SqliteMetaStore } from "../../src/metadata/sqlite.js";
import type { SourceHealthEvent, SourceHealthRecord } from "../../src/metadata/meta-store.js";
import { SourceHealth, applyEvent, isPolicyRefusal, sourceState } from "../../src/federation/health.js";
import { startTestRegistry } from "../helpers/registry.js";
import { FakeSource, blob, pushForeignImage } from "./helpers.js";

const silent = pino({ level: "silent" });

async function tempStore(t: { after(fn: () => Promise<void>): void }): Promise<SqliteMetaStore> {
  const dir = await mkdtemp(join(tmpdir(), "ferry-health-"));
  const meta = new SqliteMetaStore(join(dir, "metadata.db"));
  t.after(async () => {
    await meta.close();
    await rm(dir, { recursive: true, force: true });
  });
  return meta;
}

function event(url: string, ok: boolean, at: number, latencyMs: number | null = 20): SourceHealthEvent {
  return { url, host: new URL(url).host, ok, at, latencyMs, error: ok ? null : "HTTP 503" };
}

/** Applies outcomes oldest first ("1" ok, "0" failed) to an empty record. */
function history(outcomes: string, latencyMs = 20): SourceHealthRecord | undefined {
  let record: SourceHealthRecord | undefined;
  let at = 1_000;
  for (const o of outcomes) record = applyEvent(record, event("https://cdn.example.com/a", o === "1", at++, latencyMs));
  return record;
}

test("states: unknown, failing, degraded and healthy as docs/federation.md defines them", () => {
  assert.equal(sourceState(undefined), "unknown", "never attempted");
  assert.equal(sourceState(history("0")), "failing", "every attempt so far failed (1 of 1)");
  assert.equal(sourceState(history("00")), "failing", "every attempt so far failed (2 of 2)");
  assert.equal(sourceState(history("1")), "healthy");
  assert.equal(sourceState(history("10")), "degraded", "latest failed, but it worked before");
  assert.equal(sourceState(history("100")), "degraded", "two failures in a row after a success");
  assert.equal(sourceState(history("1000")), "failing", "the latest 3 attempts failed");
  assert.equal(sourceState(history("0001")), "degraded", "back, with failures in the window");
  assert.equal(sourceState(history(`000${"1".repeat(9)}`)), "degraded", "a failure is still among the latest 10");
  assert.equal(sourceState(history(`000${"1".repeat(10)}`)), "healthy", "the failures left the window");
  assert.equal(sourceState(history("1", 6_000)), "degraded", "slow: 6 s to headers");
  assert.equal(sourceState(history("1", 6_000), 10_000), "healthy", "the slow threshold is an option");
  const failing = history("1000")!;
  assert.equal(failing.consecutiveFailures, 3);
  assert.equal(failing.recent, "0001");
});

test("the store computes the same record as memory (counts, window, consecutive failures)", async (t) => {
  const meta = await tempStore(t);
  const outcomes = "1101000111110000";
  let memory: SourceHealthRecord | undefined;
  let at = 5_000;
  for (const o of outcomes) {
    const e = event("https://cdn.example.com/layer", o === "1", at++, o === "1" ? 30 : null);
    memory = applyEvent(memory, e);
    await meta.recordSourceHealth(e);
  }
  const [stored] = await meta.listSourceHealth();
  assert.ok(stored && memory);
  for (const key of ["url", "host", "successes", "failures", "consecutiveFailures", "recent", "lastSuccessAt", "lastFailureAt", "lastError", "lastLatencyMs"] as const) {
    assert.deepEqual(stored[key], memory[key], key);
  }
  assert.equal(stored.recent.length, 10);
  assert.equal(sourceState(stored), "failing");
});

test("a URL that failed twice and never worked stays failing a minute later (was: healthy with 0 ok / 2 failed)", async (t) => {
  const meta = await tempStore(t);
  const url = "https://cdn.example.com/base.tar.gz";
  const twoMinutesAgo = Date.now() - 120_000;
  await meta.recordSourceHealth(event(url, false, twoMinutesAgo));
  await meta.recordSourceHealth(event(url, false, twoMinutesAgo + 1_000));
  const health = new SourceHealth(meta, silent);
  await health.load();
  const [row] = await health.list();
  assert.equal(row?.url, url);
  assert.equal(row?.successes, 0);
  assert.equal(row?.failures, 2);
  assert.equal(row?.state, "failing");
  assert.equal(health.isHealthy(url), false, "routing still prefers other URLs");
  assert.equal(health.state("https://cdn.example.com/other.tar.gz"), "unknown", "another URL on the same host is not judged by this one");
  assert.equal(health.isHealthy("https://cdn.example.com/other.tar.gz"), true);
});

test("policy refusals (scheme, rules, the SSRF address check) are never recorded", async (t) => {
  const meta = await tempStore(t);
  const health = new SourceHealth(meta, silent);
  const url = "http://127.0.0.1:9/x";
  health.record(url, { ok: false, latencyMs: null, error: "refused to connect to 127.0.0.1: it is a loopback address" });
  health.record(url, { ok: false, latencyMs: null, error: "URL uses the scheme ftp, which this registry does not allow" });
  health.record(url, { ok: false, latencyMs: null, error: "whatever", kind: "denied" });
  health.record(url, { ok: false, latencyMs: null, error: "http://x/ is denied by federation rule rules[0] (^http://)" });
  await health.flush();
  assert.deepEqual(await meta.listSourceHealth(), []);
  assert.equal(health.state(url), "unknown");
  // The control: a real failure is recorded.
  health.record(url, { ok: false, latencyMs: null, error: "connection refused" });
  await health.flush();
  assert.equal((await meta.listSourceHealth()).length, 1);
  assert.equal(isPolicyRefusal({ error: "HTTP 403" }), false);
  assert.equal(isPolicyRefusal({ error: "connection refused" }), false);
});

test("registry: a push whose verification the SSRF check refuses leaves the URL unknown, not failing", async (t) => {
  const s = await new FakeSource().start();
  t.after(() => s.close());
  // allowPrivateNetworks stays false: the fetcher refuses 127.0.0.1 before any connection.
  const r = await startTestRegistry({ federation: { verify: { mode: "head", onFailure: "warn" } } });
  t.after(() => r.close());
  const layer = blob(64);
  const url = s.put("/layer", layer.bytes);
  for (const tag of ["v1", "v2"]) {
    const push = await pushForeignImage(r.url, "team/app", tag, [{ ...layer, urls: [url] }]);
    assert.equal(push.status, 201, push.body);
    assert.match(push.headers.get("warning") ?? "", /refused to connect to 127\.0\.0\.1/);
  }
  assert.equal(s.requests.length, 0, "nothing reached the source");
  const answer = (await (await fetch(`${r.url}/ferry/v1/foreign/sources`)).json()) as { sources: Array<{ url: string; state: string; failures: number; referenced: boolean }> };
  assert.deepEqual(
    answer.sources.map(({ url, state, failures, referenced }) => ({ url, state, failures, referenced })),
    [{ url, state: "unknown", failures: 0, referenced: true }],
  );
});

test("registry: health is per URL — a 404 on one path does not make the host's other URL fail", async (t) => {
  const s = await new FakeSource().start();
  t.after(() => s.close());
  const r = await startTestRegistry({ federation: { verify: { mode: "head", onFailure: "warn" }, proxy: { allowPrivateNetworks: true } } });
  t.after(() => r.close());
  const good = blob(10);
  const gone = blob(20);
  const goodUrl = s.put("/good", good.bytes);
  const goneUrl = s.url("/gone");
  for (const tag of ["v1", "v2"]) {
    const push = await pushForeignImage(r.url, "team/app", tag, [{ ...good, urls: [goodUrl] }, { ...gone, urls: [goneUrl] }]);
    assert.equal(push.status, 201, push.body);
  }
  // v2 had the same layers already verified/unverified: the good one is not asked again, the gone one is.
  const answer = (await (await fetch(`${r.url}/ferry/v1/foreign/sources`)).json()) as { sources: Array<{ url: string; host: string; state: string; successes: number; failures: number }> };
  const byUrl = new Map(answer.sources.map((row) => [row.url, row]));
  assert.equal(byUrl.get(goodUrl)?.state, "healthy");
  assert.equal(byUrl.get(goneUrl)?.state, "failing");
  assert.equal(byUrl.get(goneUrl)?.failures, 2);
  assert.equal(byUrl.get(goneUrl)?.successes, 0);
  assert.equal(byUrl.get(goodUrl)?.host, byUrl.get(goneUrl)?.host, "same host, different states");
});

test("a URL that answers with a redirect to a denied URL counts as a failed attempt of that URL", () => {
  assert.equal(isPolicyRefusal({ error: "redirected to http://127.0.0.5:8085/x, which is denied by federation rule rules[0] (hosts: 127.0.0.5)", kind: "denied" }), false);
  assert.equal(isPolicyRefusal({ error: "is denied by federation rule rules[0] (hosts: 127.0.0.5)", kind: "denied" }), true);
});
