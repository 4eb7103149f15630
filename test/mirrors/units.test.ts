/** Name mapping, prefix matching, tag patterns and the flight's window, without a network. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { createHash, randomBytes } from "node:crypto";
import { MirrorSet } from "../../src/mirrors/mirror.js";
import { mirrorConfigSchema } from "../../src/mirrors/config.js";
import { globToRegExp } from "../../src/mirrors/sync.js";
import { BlobFlight } from "../../src/mirrors/blob-flight.js";

const config = (prefix: string, upstream: string, extra: Record<string, unknown> = {}) => mirrorConfigSchema.parse({ prefix, upstream, ...extra });

test("Docker Hub official images get library/; other upstreams keep the name; ns values default to the upstream host (and docker.io for Hub)", (t) => {
  const set = new MirrorSet([config("hub/", "https://registry-1.docker.io"), config("quay/", "https://quay.io"), config("hub/special/", "http://127.0.0.1:5999")]);
  t.after(() => set.close());
  const hub = set.match("hub/alpine")!;
  assert.equal(hub.prefix, "hub/");
  assert.equal(hub.upstreamName("hub/alpine"), "library/alpine");
  assert.equal(hub.upstreamName("hub/bitnami/redis"), "bitnami/redis");
  assert.equal(set.match("quay/alpine")!.upstreamName("quay/alpine"), "alpine");
  assert.equal(set.match("hub/special/x")!.prefix, "hub/special/", "the longest prefix wins");
  assert.equal(set.match("hub/"), null, "the prefix alone names no repository");
  assert.equal(set.match("local/app"), null);
  assert.equal(set.forNamespace("docker.io")!.prefix, "hub/");
  assert.equal(set.forNamespace("registry-1.docker.io")!.prefix, "hub/");
  assert.equal(set.forNamespace("quay.io")!.prefix, "quay/");
  assert.equal(set.forNamespace("ghcr.io"), null);
});

test("the empty prefix mirrors every repository (dockerd registry-mirrors), after every named prefix", (t) => {
  const set = new MirrorSet([config("", "https://registry-1.docker.io"), config("q/", "https://quay.io")]);
  t.after(() => set.close());
  assert.equal(set.match("library/alpine")!.prefix, "");
  assert.equal(set.match("library/alpine")!.upstreamName("library/alpine"), "library/alpine");
  assert.equal(set.match("q/app")!.prefix, "q/");
});

test("sync tag patterns: * and ? only, anchored, everything else literal", () => {
  assert.ok(globToRegExp("3.*").test("3.19"));
  assert.ok(!globToRegExp("3.*").test("31"), "the dot is literal");
  assert.ok(!globToRegExp("3.*").test("v3.19"), "anchored");
  assert.ok(globToRegExp("v?").test("v1"));
  assert.ok(!globToRegExp("v?").test("v10"));
  assert.ok(globToRegExp("*").test("anything-at.all_1"));
});

test("a client further behind than the flight's window is told to read from the store; clients within it get the bytes in order", async () => {
  const bytes = randomBytes(64 * 1024);
  const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  const flight = new BlobFlight(digest, bytes.length, { windowBytes: 16 * 1024 });
  const chunks = Array.from({ length: 8 }, (_, i) => bytes.subarray(i * 8192, (i + 1) * 8192));
  const stored: Buffer[] = [];
  await flight.run(Readable.from(chunks), async (verified) => {
    for await (const chunk of verified) stored.push(chunk as Buffer);
  });
  assert.deepEqual(Buffer.concat(stored), bytes);
  assert.equal(flight.pieceAt(0).kind, "behind", "the start has left the 16 KiB window");
  const tail = flight.pieceAt(bytes.length - 100);
  assert.equal(tail.kind, "bytes");
  assert.deepEqual(tail.kind === "bytes" ? tail.bytes : null, bytes.subarray(bytes.length - 100));
  assert.equal(flight.pieceAt(bytes.length).kind, "end");
});

test("a flight whose bytes do not match the digest fails and never hands out the last chunk", async () => {
  const bytes = randomBytes(32 * 1024);
  const flight = new BlobFlight(`sha256:${"0".repeat(64)}`, bytes.length);
  let stored = 0;
  await assert.rejects(
    flight.run(Readable.from([bytes.subarray(0, 16384), bytes.subarray(16384)]), async (verified) => {
      for await (const chunk of verified) stored += (chunk as Buffer).length;
    }),
    /digest mismatch/,
  );
  assert.ok(stored < bytes.length);
  assert.ok(flight.failed);
  assert.notEqual(flight.pieceAt(bytes.length - 1).kind, "bytes");
});
