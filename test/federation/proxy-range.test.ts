/**
 * The proxy's Range logic against a fetcher that sends `Range` (a stand-in
 * for the SSRF-safe fetcher, which only has to put the header on the wire):
 * a range of a large uncached blob is asked of the source and its
 * Content-Range checked; a stream whose source fails midway resumes from the
 * next URL at the right offset. Real sources on 127.0.0.1, real stores.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pino } from "pino";
import { Proxy, type ProxyRequest } from "../../src/federation/proxy.js";
import { ProxyCache } from "../../src/federation/cache.js";
import { SourceHealth } from "../../src/federation/health.js";
import type { FetchRequest, FetchResponse, SafeFetcher } from "../../src/federation/fetcher.js";
import { SqliteMetaStore } from "../../src/metadata/sqlite.js";
import { FilesystemBlobStore } from "../../src/storage/filesystem.js";
import type { ForeignLayerMark } from "../../src/metadata/meta-store.js";
import { blob, sha256 } from "./helpers.js";
import { RangeSource } from "./range-source.js";

type After = { after(fn: () => Promise<void>): void };

/** Plain HTTP with the Range header the proxy asks for. */
const rangeFetcher = {
  fetch(req: FetchRequest & { range?: { start: number; end?: number } }): Promise<FetchResponse> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = req.range ? { Range: `bytes=${req.range.start}-${req.range.end ?? ""}` } : {};
      const started = Date.now();
      const r = request(req.url, { method: req.method, headers }, (res) => {
        const length = res.headers["content-length"];
        resolve({ url: req.url, status: res.statusCode ?? 0, headers: res.headers, contentLength: length ? Number(length) : null, body: res, latencyMs: Date.now() - started });
      });
      r.on("error", reject);
      r.end();
    });
  },
} as unknown as SafeFetcher;

async function setup(t: After) {
  const dir = await mkdtemp(join(tmpdir(), "ferry-proxy-range-"));
  const meta = new SqliteMetaStore(join(dir, "metadata.db"));
  const store = new FilesystemBlobStore({ root: join(dir, "cache"), fsync: false, directIo: false });
  await store.init();
  const logger = pino({ level: "silent" });
  const cache = new ProxyCache({ store, meta, ttlMs: 60_000, maxBytes: 10 * 1024 * 1024, logger });
  const proxy = new Proxy(rangeFetcher, new SourceHealth(meta, logger), cache, meta, 2000, logger);
  const source = await new RangeSource().start();
  t.after(async () => {
    await source.close();
    await meta.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { proxy, source, meta };
}

function markOf(layer: { digest: string; size: number }, urls: string[]): ForeignLayerMark {
  return { repository: "app", digest: layer.digest, mediaType: "x", size: layer.size, urls, verification: "unverified", verifiedAt: null, verificationDetail: null, manifests: [], provenUrls: [] };
}

function requestFor(mark: ForeignLayerMark, extra: Partial<ProxyRequest> = {}): ProxyRequest {
  return { repository: "app", mark, candidates: mark.urls, allowed: mark.urls, cache: false, pin: false, verifyBeforeServe: false, ...extra };
}

async function read(body: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

test("a range of a large uncached blob is asked of the source; a wrong Content-Range sends the proxy to the next URL", async (t) => {
  const { proxy, source } = await setup(t);
  const layer = blob(300_000);
  const bad = source.put("/bad", layer.bytes);
  source.behave("/bad", { kind: "bad-content-range" });
  const good = source.put("/good", layer.bytes);
  const response = await proxy.serve(requestFor(markOf(layer, [bad, good]), { range: { start: 1000, end: 1999 } }));
  assert.equal(response.kind, "stream");
  if (response.kind !== "stream") return;
  assert.deepEqual(response.range, { start: 1000, end: 1999 });
  assert.deepEqual(await read(response.body), layer.bytes.subarray(1000, 2000));
  assert.equal(source.gets("/bad")[0]!.range, "bytes=1000-1999");
  assert.equal(source.gets("/good")[0]!.range, "bytes=1000-1999", "only the range was fetched");
});

test("a range whose source sends fewer bytes than its Content-Range promised never arrives complete", async (t) => {
  const { proxy, source } = await setup(t);
  const layer = blob(300_000);
  const url = source.put("/cut", layer.bytes);
  source.behave("/cut", { kind: "cut", afterBytes: 500 });
  // Nothing reached the client yet (the short answer is held back): a proper UNAVAILABLE instead of a stream.
  await assert.rejects(proxy.serve(requestFor(markOf(layer, [url]), { range: { start: 0, end: 99_999 } })), { code: "UNAVAILABLE" });
  // Cut after the client had bytes: the stream fails and never completes.
  source.behave("/cut", { kind: "cut", afterBytes: 80_000 });
  const response = await proxy.serve(requestFor(markOf(layer, [url]), { range: { start: 0, end: 99_999 } }));
  if (response.kind !== "stream") return assert.fail("a stream");
  await assert.rejects(read(response.body));
});

test("a streamed blob whose source fails midway resumes from the next URL at the offset reached", async (t) => {
  const { proxy, source, meta } = await setup(t);
  const layer = blob(400_000);
  const cut = source.put("/cut", layer.bytes);
  source.behave("/cut", { kind: "cut", afterBytes: 150_000 });
  const good = source.put("/good", layer.bytes);
  await meta.putManifest("app", {
    digest: sha256("m"), mediaType: "application/vnd.oci.image.manifest.v1+json", content: Buffer.from("m"), subjectDigest: null, artifactType: null, annotations: null, blobs: [], manifests: [],
    foreignLayers: [{ digest: layer.digest, mediaType: "x", size: layer.size, urls: [cut, good], verification: "unverified", verifiedAt: null, verificationDetail: null }],
  });
  const response = await proxy.serve(requestFor(markOf(layer, [cut, good])));
  if (response.kind !== "stream") return assert.fail("a stream");
  assert.equal(sha256(await read(response.body)), layer.digest);
  const resume = source.gets("/good")[0]!.range ?? "";
  const offset = Number(/^bytes=(\d+)-$/.exec(resume)?.[1] ?? -1);
  assert.ok(offset > 0 && offset <= 150_000, `resumed at the offset reached, not from 0: ${resume}`);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.deepEqual([...((await meta.getForeignLayer("app", layer.digest))?.provenUrls ?? [])].sort(), [cut, good].sort(), "both delivered part of the verified blob");
});
