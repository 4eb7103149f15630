/**
 * Background re-verification (`federation.recheck`): loopback sources that go
 * down and come back, the state and the Prometheus metrics following them, and
 * one round per interval however many registries share the metadata store.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { loadConfig } from "../../src/config/load.js";
import { FakeSource, blob, pushForeignImage } from "./helpers.js";

interface SourceRow {
  url: string;
  state: string;
  successes: number;
  failures: number;
  lastCheckedAt: number | null;
}

interface SourcesAnswer {
  sources: SourceRow[];
  recheck: { interval: number; method?: string; lastRound: { startedAt: number; finishedAt: number | null; checked: number } | null };
}

const FEDERATION = { rules: [{ match: "^http://127\\.", serve: "proxy" }], proxy: { allowPrivateNetworks: true } };

async function sources(r: TestRegistry): Promise<SourcesAnswer> {
  const response = await fetch(`${r.url}/ferry/v1/foreign/sources`);
  assert.equal(response.status, 200);
  return (await response.json()) as SourcesAnswer;
}

async function metrics(r: TestRegistry): Promise<string> {
  const response = await fetch(`${r.url}/metrics`);
  assert.equal(response.status, 200);
  return response.text();
}

function metric(text: string, name: string, host: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{url_host="${host}"}`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test("recheck: a source that goes down turns failing (metrics up 0), and comes back when it answers again", async (t) => {
  const s = await new FakeSource().start();
  t.after(() => s.close());
  const r = await startTestRegistry({ federation: { ...FEDERATION, recheck: { interval: "200ms", timeout: "1s", method: "head" } } });
  t.after(() => r.close());
  const layer = blob(300);
  const url = s.put("/layer", layer.bytes);
  const missing = s.url("/missing");
  const push = await pushForeignImage(r.url, "team/app", "v1", [{ ...layer, urls: [url, missing] }]);
  assert.equal(push.status, 201, push.body);
  const host = `127.0.0.1:${s.port}`;

  const healthy = await waitFor("the first rounds", async () => {
    const answer = await sources(r);
    const row = answer.sources.find((x) => x.url === url);
    return row?.state === "healthy" && answer.sources.find((x) => x.url === missing)?.state === "failing" ? answer : undefined;
  });
  assert.equal(healthy.recheck.interval, 200);
  assert.ok(healthy.recheck.lastRound?.finishedAt, "the round is recorded");
  assert.ok(s.requests.some((q) => q.method === "HEAD" && q.path === "/layer"), "head mode sends HEAD");
  assert.equal(s.gets(), 0, "head mode fetches no bytes");
  // One failing URL on the host: the host is not up.
  assert.equal(metric(await metrics(r), "ferry_foreign_source_up", host), 0);
  assert.match(await metrics(r), new RegExp(`ferry_foreign_source_urls\\{url_host="${host.replace(/\./g, "\\.")}",state="healthy"\\} 1`));

  await s.down();
  const down = await waitFor("the source to turn failing", async () => {
    const row = (await sources(r)).sources.find((x) => x.url === url);
    return row?.state === "failing" ? row : undefined;
  });
  assert.ok(down.failures >= 3);
  const text = await metrics(r);
  assert.equal(metric(text, "ferry_foreign_source_up", host), 0);
  assert.ok((metric(text, "ferry_foreign_source_failures_total", host) ?? 0) >= 3);
  const lastCheck = metric(text, "ferry_foreign_source_last_check_timestamp_seconds", host) ?? 0;
  assert.ok(Math.abs(lastCheck - Date.now() / 1000) < 5, `last check ${lastCheck} is recent`);

  await s.up();
  const back = await waitFor("the source to answer again", async () => {
    const row = (await sources(r)).sources.find((x) => x.url === url);
    return row && row.state !== "failing" && row.lastCheckedAt !== null && row.lastCheckedAt > down.lastCheckedAt! ? row : undefined;
  });
  assert.equal(back.state, "degraded", "working again, with failures in the window");
});

test("recheck off (the default): nothing is fetched in the background", async (t) => {
  const s = await new FakeSource().start();
  t.after(() => s.close());
  const r = await startTestRegistry({ federation: FEDERATION });
  t.after(() => r.close());
  const layer = blob(10);
  assert.equal((await pushForeignImage(r.url, "team/app", "v1", [{ ...layer, urls: [s.put("/l", layer.bytes)] }])).status, 201);
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.equal(s.requests.length, 0);
  const answer = await sources(r);
  assert.equal(answer.recheck.interval, 0);
  assert.equal(answer.sources[0]?.state, "unknown");
});

test("recheck: fetch mode downloads and checks the digest; policy-refused URLs are not fetched", async (t) => {
  const s = await new FakeSource().start();
  t.after(() => s.close());
  const r = await startTestRegistry({ federation: { ...FEDERATION, recheck: { interval: "200ms", timeout: "1s", method: "fetch" } } });
  t.after(() => r.close());
  const layer = blob(100);
  const wrong = blob(100);
  const url = s.put("/layer", layer.bytes);
  const liar = s.put("/liar", wrong.bytes);
  s.behave("/liar", { kind: "wrong-bytes" });
  assert.equal((await pushForeignImage(r.url, "team/app", "v1", [{ ...layer, urls: [url] }, { ...wrong, urls: [liar] }])).status, 201);
  const rows = await waitFor("a fetch round", async () => {
    const answer = await sources(r);
    const good = answer.sources.find((x) => x.url === url);
    const bad = answer.sources.find((x) => x.url === liar);
    return good?.state === "healthy" && bad?.state === "failing" ? { good, bad } : undefined;
  });
  assert.ok(rows.bad.failures >= 1);
  assert.ok(s.gets("/layer") >= 1, "fetch mode GETs the bytes");
});

test("recheck: two registries on one data directory run one round per interval between them", async (t) => {
  const s = await new FakeSource().start();
  t.after(() => s.close());
  const dir = await mkdtemp(join(tmpdir(), "ferry-recheck-shared-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const interval = 600;
  const config = { federation: { ...FEDERATION, recheck: { interval: `${interval}ms`, timeout: "1s" } } };
  const a = await startTestRegistry(config, dir);
  t.after(() => a.close());
  const b = await startTestRegistry(config, dir);
  t.after(() => b.close());
  const layer = blob(50);
  const url = s.put("/shared", layer.bytes);
  assert.equal((await pushForeignImage(a.url, "team/app", "v1", [{ ...layer, urls: [url] }])).status, 201);

  const started = Date.now();
  await waitFor("four rounds", async () => (s.requests.filter((q) => q.path === "/shared").length >= 4 ? true : undefined), 10_000);
  const elapsed = Date.now() - started;
  const heads = s.requests.filter((q) => q.path === "/shared").length;
  // Each registry alone would HEAD once per interval; two without the shared claim, twice.
  assert.ok(heads <= Math.floor(elapsed / interval) + 1, `${heads} HEADs in ${elapsed} ms: more than one round per ${interval} ms`);

  // Both processes expose the same shared records, whichever ran the rounds (asked between rounds).
  const host = `127.0.0.1:${s.port}`;
  await waitFor("the same view from both registries", async () => {
    const [fromA, fromB, ma, mb] = await Promise.all([sources(a), sources(b), metrics(a), metrics(b)]);
    const rowA = fromA.sources.find((x) => x.url === url);
    const rowB = fromB.sources.find((x) => x.url === url);
    const same =
      rowA?.state === "healthy" &&
      rowA.successes === rowB?.successes &&
      JSON.stringify(fromA.recheck.lastRound) === JSON.stringify(fromB.recheck.lastRound) &&
      metric(ma, "ferry_foreign_source_up", host) === 1 &&
      metric(mb, "ferry_foreign_source_up", host) === 1 &&
      metric(ma, "ferry_foreign_source_attempts_total", host) === metric(mb, "ferry_foreign_source_attempts_total", host);
    return same ? true : undefined;
  });
});

test("config: recheck defaults to off; keys come from the file or the environment and are validated", () => {
  assert.deepEqual(loadConfig({ env: {} }).federation.recheck, { interval: 0, method: "head", concurrency: 4, timeout: 10_000 });
  const fromEnv = loadConfig({ env: { FERRY_FEDERATION__RECHECK__INTERVAL: "15m", FERRY_FEDERATION__RECHECK__METHOD: "fetch" } });
  assert.equal(fromEnv.federation.recheck.interval, 900_000);
  assert.equal(fromEnv.federation.recheck.method, "fetch");
  assert.throws(() => loadConfig({ env: {}, overrides: { federation: { recheck: { method: "ping" } } } }), /federation\.recheck\.method.*FERRY_FEDERATION__RECHECK__METHOD/s);
  assert.throws(() => loadConfig({ env: {}, overrides: { federation: { recheck: { concurrency: 0 } } } }), /federation\.recheck\.concurrency/);
  assert.throws(() => loadConfig({ env: {}, overrides: { federation: { recheck: { interval: "soon" } } } }), /federation\.recheck\.interval/);
});
