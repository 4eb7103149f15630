/**
 * A `Range` request for a blob the mirror does not hold yet: 206 with exactly
 * the range (or 416), answered from the verified blob once the single fetch
 * is committed; wrong upstream bytes give a 502 and leave nothing behind.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { FakeUpstream } from "./fake-upstream.js";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";

type After = { after(fn: () => Promise<void>): void };

async function setup(t: After): Promise<{ upstream: FakeUpstream; mirror: TestRegistry }> {
  const upstream = await new FakeUpstream().start();
  t.after(() => upstream.close());
  const mirror = await startTestRegistry({ mirrors: [{ prefix: "m/", upstream: upstream.url }] });
  t.after(() => mirror.close());
  return { upstream, mirror };
}

test("a range of an uncached blob: 206 with the range, concurrent full pulls share the one fetch, and the blob is cached after", async (t) => {
  const { upstream, mirror } = await setup(t);
  const bytes = randomBytes(3 * 1024 * 1024 + 17);
  const digest = upstream.addBlob("r", bytes);
  upstream.pace = { chunk: 256 * 1024, delayMs: 5 };
  const url = `${mirror.url}/v2/m/r/blobs/${digest}`;
  const [ranged, suffix, full] = await Promise.all([
    fetch(url, { headers: { Range: "bytes=1000-1999" } }),
    fetch(url, { headers: { Range: "bytes=-100" } }),
    fetch(url),
  ]);
  assert.equal(ranged.status, 206);
  assert.equal(ranged.headers.get("content-range"), `bytes 1000-1999/${bytes.length}`);
  assert.deepEqual(Buffer.from(await ranged.arrayBuffer()), bytes.subarray(1000, 2000));
  assert.equal(suffix.status, 206);
  assert.deepEqual(Buffer.from(await suffix.arrayBuffer()), bytes.subarray(bytes.length - 100));
  assert.equal(full.status, 200);
  assert.deepEqual(Buffer.from(await full.arrayBuffer()), bytes);
  assert.equal(upstream.count("GET", "/blobs/"), 1, "one upstream fetch for all three");
  const unsatisfiable = await fetch(url, { headers: { Range: `bytes=${bytes.length}-` } });
  assert.equal(unsatisfiable.status, 416);
  await unsatisfiable.arrayBuffer();
  assert.equal(upstream.count("GET", "/blobs/"), 1, "answered from the cache");
});

test("a range of an uncached blob whose upstream bytes are wrong: 502 naming the upstream, never a byte of them, nothing stored", async (t) => {
  const { upstream, mirror } = await setup(t);
  const bytes = randomBytes(512 * 1024);
  const digest = upstream.addBlob("liar", bytes);
  const wrong = Buffer.from(bytes);
  wrong[10] ^= 0xff;
  upstream.corrupt.set(digest, wrong);
  const response = await fetch(`${mirror.url}/v2/m/liar/blobs/${digest}`, { headers: { Range: "bytes=0-99" } });
  assert.equal(response.status, 502);
  const body = (await response.json()) as { errors: Array<{ code: string; message: string }> };
  assert.equal(body.errors[0]!.code, "UNAVAILABLE");
  assert.ok(body.errors[0]!.message.includes(upstream.url));
  assert.match(body.errors[0]!.message, /digest mismatch/);
  assert.equal(await mirror.registry.deps.meta.linkedBlob("m/liar", digest), null);
});
