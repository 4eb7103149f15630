/**
 * A writer that lost its upload session on S3: another replica's request was
 * frozen mid-append past its lease, the session was taken over and moved on,
 * then the frozen request wakes up and goes on writing. Whatever it writes
 * (parts, pieces, a state), the session and the committed blob must hold
 * only the bytes the clients of the current writer sent. The filesystem
 * driver's counterpart is test/registry/cross-process-locks.test.ts.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { S3BlobStore } from "../../src/storage/s3.js";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { sha256 } from "../helpers/images.js";
import { skipUnlessS3, useS3Bucket } from "../helpers/s3-rgw.js";

const MiB = 1024 * 1024;
const skip = skipUnlessS3();
const registries: TestRegistry[] = [];
const stores: S3BlobStore[] = [];
after(async () => {
  for (const registry of registries) await registry.close();
  for (const store of stores) await store.close();
});
const s3 = useS3Bucket(skip);

function s3Options(prefix: string) {
  return {
    endpoint: s3.server.endpoint,
    region: "us-east-1",
    bucket: s3.bucket,
    accessKeyId: s3.server.accessKeyId,
    secretAccessKey: s3.server.secretAccessKey,
    prefix,
    partSize: 5 * MiB,
  };
}

async function s3Registry(prefix: string): Promise<TestRegistry> {
  const { partSize: _partSize, region: _region, ...s3Config } = s3Options(prefix);
  const registry = await startTestRegistry({ storage: { driver: "s3", s3: { ...s3Config, partSize: "5MiB" } } });
  registries.push(registry);
  return registry;
}

/** A request body whose sender we control: `reading` resolves once the driver has read the session's state and waits for bytes. */
function frozenBody(): { body: Readable; reading: Promise<void> } {
  let started!: () => void;
  const reading = new Promise<void>((resolve) => (started = resolve));
  const body = new Readable({ read: () => started() });
  return { body, reading };
}

const cases = [
  // The session has a multipart part and a piece; the frozen writer would upload a part under the number the next writer uses.
  { name: "whole parts", first: 5 * MiB, chunk: 6 * MiB },
  // Small chunks live in piece objects only; the frozen writer would write a piece at the very offset and size the next writer uses.
  { name: "small pieces", first: 100_000, chunk: 200_000 },
];

for (const { name, first, chunk } of cases) {
  test(`a writer on another replica that lost its session can change neither the session nor the committed blob (${name})`, { skip }, async () => {
    const prefix = `stale-${first}/`;
    const registry = await s3Registry(prefix);
    const c1 = randomBytes(first);
    const post = await fetch(`${registry.url}/v2/stale/app/blobs/uploads/`, { method: "POST" });
    assert.equal(post.status, 202);
    const location = new URL(post.headers.get("location")!, registry.url).toString();
    const id = location.split("/").pop()!.split("?")[0]!;
    assert.equal((await fetch(location, { method: "PATCH", body: new Uint8Array(c1) })).status, 202);

    // Another replica's request starts appending, reads the session's state, then freezes
    // while its lease runs out.
    const replica = new S3BlobStore(s3Options(prefix));
    stores.push(replica);
    const frozen = frozenBody();
    const staleAppend = replica.appendUpload(id, frozen.body, { offset: first });
    staleAppend.catch(() => undefined);
    await frozen.reading;
    assert.equal(await registry.registry.deps.meta.acquireLease(`upload:${id}`, "frozen:1:x", 1), true);
    await new Promise((resolve) => setTimeout(resolve, 5));

    // The client's retry takes the session over and moves it on with its own bytes.
    const mine = randomBytes(chunk);
    const patch = await fetch(location, {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream", "Content-Range": `${first}-${first + chunk - 1}` },
      body: new Uint8Array(mine),
    });
    assert.equal(patch.status, 202, await patch.text());

    // The frozen request wakes up and sends different bytes of the same length at the same offset.
    frozen.body.push(randomBytes(chunk));
    frozen.body.push(null);
    await assert.rejects(staleAppend, "the stale writer's append must not succeed");

    const expected = Buffer.concat([c1, mine]);
    assert.equal((await registry.registry.deps.blobs.uploadSize(id)), expected.length);
    const put = await fetch(`${location}?digest=${sha256(expected)}`, { method: "PUT" });
    assert.equal(put.status, 201, await put.text());
    const pulled = Buffer.from(await (await fetch(`${registry.url}/v2/stale/app/blobs/${sha256(expected)}`)).arrayBuffer());
    assert.equal(pulled.length, expected.length);
    assert.ok(pulled.equals(expected), "the committed blob holds the current writer's bytes");
  });
}

test("a session taken over continues on another replica: the re-hash there reads exactly the current writer's bytes", { skip }, async () => {
  const prefix = "stale-rehash/";
  const one = await s3Registry(prefix);
  const c1 = randomBytes(6 * MiB);
  const post = await fetch(`${one.url}/v2/stale/app/blobs/uploads/`, { method: "POST" });
  const location = new URL(post.headers.get("location")!, one.url).toString();
  const id = location.split("/").pop()!.split("?")[0]!;
  assert.equal((await fetch(location, { method: "PATCH", body: new Uint8Array(c1) })).status, 202);
  const replica = new S3BlobStore(s3Options(prefix));
  stores.push(replica);
  const frozen = frozenBody();
  const staleAppend = replica.appendUpload(id, frozen.body, { offset: c1.length });
  staleAppend.catch(() => undefined);
  await frozen.reading;
  assert.equal(await one.registry.deps.meta.acquireLease(`upload:${id}`, "frozen:1:x", 1), true);
  await new Promise((resolve) => setTimeout(resolve, 5));
  const mine = randomBytes(2 * MiB);
  const patch = await fetch(location, {
    method: "PATCH",
    headers: { "Content-Type": "application/octet-stream", "Content-Range": `${c1.length}-${c1.length + mine.length - 1}` },
    body: new Uint8Array(mine),
  });
  assert.equal(patch.status, 202);
  frozen.body.push(randomBytes(7 * MiB));
  frozen.body.push(null);
  await assert.rejects(staleAppend);
  // A driver that never saw the session (another replica, or after a restart) completes it from S3 alone.
  const other = new S3BlobStore(s3Options(prefix));
  stores.push(other);
  const chunks: Buffer[] = [];
  for await (const data of await other.readUpload(id)) chunks.push(data as Buffer);
  assert.ok(Buffer.concat(chunks).equals(Buffer.concat([c1, mine])));
});
