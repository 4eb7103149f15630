/**
 * Proxy serving when sources misbehave, Range forwarding, and the truthful
 * 406 of requireClientSupport. Sources are real servers on 127.0.0.1.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { type TestRegistry } from "../helpers/registry.js";
import { federatedRegistry, serveAll, blob, parseErrors, pushForeignImage, sha256 } from "./helpers.js";
import { RangeSource } from "./range-source.js";
import { SafeFetcher, type FetchRequest } from "../../src/federation/fetcher.js";

type After = { after(fn: () => Promise<void>): void };

const registry = federatedRegistry;

async function source(t: After): Promise<RangeSource> {
  const s = await new RangeSource().start();
  t.after(() => s.close());
  return s;
}

const all = serveAll;

/** Pushes app:v1 naming `layer` at two URLs: /cut, which breaks off after `afterBytes`, then /good. */
async function pushCutThenGood(s: RangeSource, r: TestRegistry, layer: { bytes: Buffer; digest: string; size: number }, afterBytes: number): Promise<void> {
  s.put("/cut", layer.bytes);
  s.behave("/cut", { kind: "cut", afterBytes });
  const good = s.put("/good", layer.bytes);
  await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [s.url("/cut"), good] }]);
}

/** A raw GET that reports whether the body arrived complete or the connection was cut. */
function rawGet(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer; complete: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const req = request(url, { headers }, (res) => {
      const done = (complete: boolean) => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), complete });
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => done(res.complete));
      res.on("aborted", () => done(false));
      res.on("error", () => done(false));
    });
    req.on("error", () => resolve({ status: 0, body: Buffer.alloc(0), complete: false }));
    req.end();
  });
}

/** Whether the fetcher sends a Range header when asked (src/federation/fetcher.ts belongs to the policy/SSRF work). */
async function fetcherSendsRange(): Promise<boolean> {
  const s = await new RangeSource().start();
  const fetcher = new SafeFetcher({ schemes: ["http"], allowPrivateNetworks: true } as ConstructorParameters<typeof SafeFetcher>[0]);
  try {
    const ranged: FetchRequest & { range: { start: number; end: number } } = { url: s.put("/p", Buffer.from("0123456789")), method: "GET", timeoutMs: 2000, maxBytes: 10, range: { start: 2, end: 3 } };
    const response = await fetcher.fetch(ranged);
    response.body.resume();
    return s.requests[0]?.range === "bytes=2-3";
  } catch {
    return false;
  } finally {
    fetcher.close();
    await s.close();
  }
}
const RANGE_TODO = (await fetcherSendsRange()) ? false : "needs the SSRF-safe fetcher to send `Range` for FetchRequest.range (fetcher.ts is owned by the policy work)";

test("requireClientSupport: the 406 says what the registry does with the layers in the mode in force", async (t) => {
  const s = await source(t);
  const layer = blob(100);
  const url = s.put("/a", layer.bytes);
  const messages: Record<string, string> = {};
  for (const serve of ["error", "redirect", "proxy"]) {
    const r = await registry(t, { ...all(serve), requireClientSupport: true });
    const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [url] }]);
    const res = await fetch(`${r.url}/v2/app/manifests/v1`, { headers: { Accept: "application/vnd.oci.image.manifest.v1+json" } });
    assert.equal(res.status, 406);
    const [error] = parseErrors(await res.text());
    assert.equal(error!.code, "UNSUPPORTED");
    assert.equal(error!.detail?.manifest, pushed.digest);
    messages[serve] = error!.message;
  }
  assert.match(messages.error!, /does not serve/);
  assert.doesNotMatch(messages.redirect!, /does not serve/);
  assert.match(messages.redirect!, /redirect/);
  assert.doesNotMatch(messages.proxy!, /does not serve/, "in proxy mode the registry does serve the layers");
  assert.match(messages.proxy!, /serves by fetching/);
  for (const message of Object.values(messages)) assert.match(message, /Ferry-Foreign-Layers: supported/);
});

test("verifyBeforeServe (default for small blobs): wrong bytes get a 502 naming the mismatch, never an empty 200", async (t) => {
  const s = await source(t);
  const r = await registry(t, all("proxy"));
  const layer = blob(3000);
  s.put("/a", layer.bytes);
  s.behave("/a", { kind: "wrong-bytes" });
  await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [s.url("/a")] }]);
  const got = await rawGet(`${r.url}/v2/app/blobs/${layer.digest}`);
  assert.equal(got.status, 502);
  assert.equal(got.complete, true, "a proper error response, not a cut connection");
  const [error] = parseErrors(got.body.toString());
  assert.equal(error!.code, "UNAVAILABLE");
  assert.match(error!.message, /digest mismatch/);
});

test("verifyBeforeServe: a source that fails after its headers is replaced by the next URL; when none is left, a 502", async (t) => {
  const s = await source(t);
  const r = await registry(t, all("proxy"));
  const layer = blob(50_000);
  await pushCutThenGood(s, r, layer, 1000);
  const got = await rawGet(`${r.url}/v2/app/blobs/${layer.digest}`);
  assert.equal(got.status, 200);
  assert.equal(got.complete, true);
  assert.equal(sha256(got.body), layer.digest);

  const only = blob(50_000);
  s.put("/cut-only", only.bytes);
  s.behave("/cut-only", { kind: "cut", afterBytes: 1000 });
  await pushForeignImage(r.url, "app", "v2", [{ ...only, urls: [s.url("/cut-only")] }]);
  const failed = await rawGet(`${r.url}/v2/app/blobs/${only.digest}`);
  assert.equal(failed.status, 502, "the client gets a proper error, not a cut connection");
  assert.equal(failed.complete, true);
  assert.equal(parseErrors(failed.body.toString())[0]!.code, "UNAVAILABLE");
});

test("streamed large blob: a source that fails midway is resumed from the next URL and the client gets the whole verified blob", async (t) => {
  const s = await source(t);
  const r = await registry(t, { ...all("proxy"), proxy: { verifyBeforeServe: "1KiB" } });
  const layer = blob(400_000);
  await pushCutThenGood(s, r, layer, 100_000);
  const got = await rawGet(`${r.url}/v2/app/blobs/${layer.digest}`);
  assert.equal(got.status, 200);
  assert.equal(got.complete, true, "the connection is not cut: the next URL took over");
  assert.equal(sha256(got.body), layer.digest);
  assert.equal(s.gets("/good").length, 1);

  // A failure before the client got a byte still gets a proper 502.
  const early = blob(400_000);
  s.put("/cut-early", early.bytes);
  s.behave("/cut-early", { kind: "cut", afterBytes: 10 });
  await pushForeignImage(r.url, "app", "v3", [{ ...early, urls: [s.url("/cut-early")] }]);
  const refused = await rawGet(`${r.url}/v2/app/blobs/${early.digest}`);
  assert.equal(refused.status, 502);
  assert.equal(parseErrors(refused.body.toString())[0]!.code, "UNAVAILABLE");

  // When every source fails once bytes went out, the only honest signal left is a cut connection.
  const lone = blob(400_000);
  s.put("/cut-only", lone.bytes);
  s.behave("/cut-only", { kind: "cut", afterBytes: 300_000 });
  await pushForeignImage(r.url, "app", "v2", [{ ...lone, urls: [s.url("/cut-only")] }]);
  const cut = await rawGet(`${r.url}/v2/app/blobs/${lone.digest}`);
  assert.equal(cut.status, 200);
  assert.equal(cut.complete, false);
  assert.ok(cut.body.length < lone.size);
});

test("streamed large blob: the fallback source is asked for the rest with a Range", { todo: RANGE_TODO }, async (t) => {
  const s = await source(t);
  const r = await registry(t, { ...all("proxy"), proxy: { verifyBeforeServe: false } });
  const layer = blob(400_000);
  await pushCutThenGood(s, r, layer, 100_000);
  const got = await rawGet(`${r.url}/v2/app/blobs/${layer.digest}`);
  assert.equal(sha256(got.body), layer.digest);
  const resume = s.gets("/good")[0]!.range;
  assert.match(resume ?? "", /^bytes=\d+-$/, "resumed, not fetched from the start");
  assert.ok(Number(/=(\d+)-/.exec(resume!)![1]) >= 1, "from where the first source stopped");
});

test("Range on a large uncached blob is forwarded to the source, and a wrong Content-Range is refused", { todo: RANGE_TODO }, async (t) => {
  const s = await source(t);
  const r = await registry(t, { ...all("proxy"), proxy: { verifyBeforeServe: false } });
  const layer = blob(300_000);
  const bad = s.put("/bad", layer.bytes);
  s.behave("/bad", { kind: "bad-content-range" });
  const good = s.put("/good", layer.bytes);
  await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [bad, good] }]);
  const got = await rawGet(`${r.url}/v2/app/blobs/${layer.digest}`, { Range: "bytes=1000-1999" });
  assert.equal(got.status, 206);
  assert.deepEqual(got.body, layer.bytes.subarray(1000, 2000));
  assert.equal(s.gets("/bad")[0]!.range, "bytes=1000-1999");
  assert.equal(s.gets("/good")[0]!.range, "bytes=1000-1999", "the source was asked for the range, not the whole blob");
});

test("Range on a large uncached blob from a source that ignores Range: the whole blob is verified and sliced", async (t) => {
  const s = await source(t);
  const r = await registry(t, { ...all("proxy"), proxy: { verifyBeforeServe: false } });
  const layer = blob(300_000);
  const url = s.put("/a", layer.bytes);
  s.behave("/a", { kind: "no-range" });
  await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [url] }]);
  const got = await rawGet(`${r.url}/v2/app/blobs/${layer.digest}`, { Range: "bytes=5-9" });
  assert.equal(got.status, 206);
  assert.equal(got.complete, true);
  assert.deepEqual(got.body, layer.bytes.subarray(5, 10));
  // Still ignoring Range, now with one wrong byte: the whole blob is hashed, so the slice never completes.
  s.behave("/a", { kind: "wrong-bytes", ignoreRange: true });
  const wrong = await rawGet(`${r.url}/v2/app/blobs/${layer.digest}`, { Range: "bytes=299990-299999" });
  // The slice is held until the whole blob verified: the client gets a 502 instead of the unverifiable tail.
  assert.equal(wrong.status, 502, "the tail of a blob whose digest does not match is never sent");
});

test("forwarded Range: a source that dies mid-range is replaced by the next URL, asked for the rest", async (t) => {
  const s = await source(t);
  const r = await registry(t, { ...all("proxy"), proxy: { verifyBeforeServe: false } });
  const layer = blob(400_000);
  await pushCutThenGood(s, r, layer, 150_000);
  const got = await rawGet(`${r.url}/v2/app/blobs/${layer.digest}`, { Range: "bytes=1000-200999" });
  assert.equal(got.status, 206);
  assert.equal(got.complete, true);
  assert.deepEqual(got.body, layer.bytes.subarray(1000, 201_000));
  const resume = s.gets("/good")[0]!.range;
  assert.match(resume ?? "", /^bytes=\d+-200999$/);
  assert.ok(Number(/=(\d+)-/.exec(resume!)![1]) > 1000, "asked for the rest, not the whole range again");
});

test("forwarded Range: when no source can start the range, the client gets a 502 in the spec's format, not an empty reply", async (t) => {
  const s = await source(t);
  const r = await registry(t, { ...all("proxy"), proxy: { verifyBeforeServe: false } });
  const layer = blob(400_000);
  s.put("/cut", layer.bytes);
  s.behave("/cut", { kind: "cut", afterBytes: 0 });
  await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [s.url("/cut")] }]);
  const got = await rawGet(`${r.url}/v2/app/blobs/${layer.digest}`, { Range: "bytes=100-199" });
  assert.equal(got.status, 502);
  assert.equal(parseErrors(got.body.toString())[0]!.code, "UNAVAILABLE");
});
