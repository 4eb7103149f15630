/**
 * O_DIRECT upload writes: the file must hold exactly the bytes streamed, at the
 * right offsets, whatever the chunking, and the writer must fall back to the
 * page cache (never lose or misplace bytes) when aligned memory runs out or the
 * kernel refuses a direct write.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { closeSync, constants, openSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { AlignedSlabs, SLAB_BYTES, type SlabPool } from "../../src/storage/aligned-slabs.js";
import { DirectFileWriter } from "../../src/storage/direct-file-writer.js";
import { OffThreadHashes } from "../../src/hashing/off-thread-hashes.js";
import type { IncrementalHash } from "../../src/hashing/incremental-hash.js";
import { chunkedReadable } from "../helpers/chunks.js";
import { sha256 } from "../helpers/images.js";
import { countingPool } from "../helpers/slab-pools.js";

let dir: string;
let directSupported = true;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ferry-direct-"));
  try {
    closeSync(openSync(join(dir, "probe"), constants.O_WRONLY | constants.O_CREAT | constants.O_DIRECT));
  } catch {
    directSupported = false;
  }
});
after(() => rm(dir, { recursive: true, force: true }));

async function writeThrough(name: string, data: Buffer, sizes: number[], pool: SlabPool, prefix = Buffer.alloc(0), hash?: IncrementalHash) {
  const path = join(dir, name);
  writeFileSync(path, prefix);
  const buffered = openSync(path, "r+");
  const direct = openSync(path, constants.O_WRONLY | constants.O_DIRECT);
  try {
    const writer = new DirectFileWriter(direct, buffered, prefix.length, pool, hash);
    await pipeline(chunkedReadable(data, sizes), writer);
    return { contents: readFileSync(path), counts: writer.counts };
  } finally {
    closeSync(direct);
    closeSync(buffered);
  }
}

describe("DirectFileWriter", () => {
  const pool = new AlignedSlabs(4);

  for (const [label, size] of [
    ["empty", 0],
    ["under one block", 1000],
    ["exactly one slab", SLAB_BYTES],
    ["5 slabs, a block and 3 bytes", 5 * SLAB_BYTES + 4096 + 3],
  ] as const) {
    test(`the file holds exactly the streamed bytes: ${label}`, async (t) => {
      if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
      const data = randomBytes(size);
      const { contents, counts } = await writeThrough(`f-${size}`, data, [65536, 7, 300_000], pool);
      assert.ok(contents.equals(data));
      const aligned = size - (size % 4096);
      assert.equal(counts.direct, aligned, "every whole block went to the device directly");
      assert.equal(counts.buffered, size - aligned, "only the sub-block tail went through the page cache");
    });
  }

  test("appends after existing bytes at an aligned offset", async (t) => {
    if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
    const prefix = randomBytes(8192);
    const data = randomBytes(2 * SLAB_BYTES + 10);
    const { contents } = await writeThrough("append", data, [65536], pool, prefix);
    assert.ok(contents.equals(Buffer.concat([prefix, data])));
  });

  test("when aligned memory runs out, the rest goes through the page cache, bytes intact", async (t) => {
    if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
    const empty: SlabPool = { take: () => undefined, give: () => undefined };
    const data = randomBytes(3 * SLAB_BYTES + 5);
    const { contents, counts } = await writeThrough("no-slabs", data, [65536], empty);
    assert.ok(contents.equals(data));
    assert.equal(counts.direct, 0);
    assert.equal(counts.buffered, data.length);
  });

  test("when the kernel refuses a direct write (misaligned memory), bytes are rewritten through the page cache", async (t) => {
    if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
    // Slabs that start one byte past a page boundary make every O_DIRECT write fail with EINVAL.
    const memory = Buffer.from(new WebAssembly.Memory({ initial: 64 }).buffer);
    const misaligned: Buffer[] = [1, 2].map((i) => memory.subarray(i * SLAB_BYTES + 1, (i + 1) * SLAB_BYTES + 1));
    const pool: SlabPool = { take: () => misaligned.pop(), give: (slab) => void misaligned.push(slab) };
    const data = randomBytes(2 * SLAB_BYTES + 4099);
    const { contents, counts } = await writeThrough("einval", data, [65536], pool);
    assert.ok(contents.equals(data));
    assert.equal(counts.direct, 0);
    assert.equal(counts.buffered, data.length);
  });

  test("slabs all return to the pool after a run", async (t) => {
    if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
    const small = new AlignedSlabs(2);
    await writeThrough("pool", randomBytes(6 * SLAB_BYTES + 1), [65536], small);
    assert.ok(small.take() && small.take(), "both slabs are back");
  });
});


describe("DirectFileWriter feeding a running hash from its slabs", () => {
  const hashes = new OffThreadHashes();
  after(() => hashes.close());

  for (const [label, size] of [
    ["empty", 0],
    ["under one block", 1000],
    ["exactly one slab", SLAB_BYTES],
    // Past INLINE_SLABS of the hash's own: the later slabs are hashed where they are, on the worker.
    ["9 slabs, a block and 3 bytes", 9 * SLAB_BYTES + 4096 + 3],
  ] as const) {
    test(`the digest is that of the bytes written: ${label}`, async (t) => {
      if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
      const data = randomBytes(size);
      const pool = countingPool(3);
      const hash = hashes.create();
      const { contents, counts } = await writeThrough(`h-${size}`, data, [65536, 7, 300_000], pool, undefined, hash);
      assert.ok(contents.equals(data));
      assert.equal(await hash.digest(), sha256(data));
      assert.equal(counts.direct, size - (size % 4096));
      assert.equal(pool.out, 0, "every slab came back once written and hashed");
    });
  }

  test("the memory is shared, so the hashing thread reads the slabs where they are", () => {
    const slab = new AlignedSlabs(1).take()!;
    assert.ok(slab.buffer instanceof SharedArrayBuffer);
    assert.equal(slab.byteOffset % 4096, 0);
  });

  test("with no aligned memory free, the bytes still reach the hash, once and in order", async (t) => {
    if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
    // Two slabs, then the pool runs dry and the rest goes through the page cache.
    let left = 2;
    const inner = new AlignedSlabs(2);
    const pool: SlabPool = { take: () => (left-- > 0 ? inner.take() : undefined), give: (slab) => inner.give(slab) };
    const data = randomBytes(7 * SLAB_BYTES + 123);
    const hash = hashes.create();
    const { contents, counts } = await writeThrough("h-dry", data, [65536], pool, undefined, hash);
    assert.ok(contents.equals(data));
    assert.equal(await hash.digest(), sha256(data));
    assert.ok(counts.direct > 0 && counts.buffered > 0, "both paths were taken");
  });

  test("when the kernel refuses direct writes, rewritten bytes are not hashed twice", async (t) => {
    if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
    const memory = Buffer.from(new WebAssembly.Memory({ initial: 96, maximum: 96, shared: true }).buffer);
    const misaligned: Buffer[] = [1, 2, 3, 4].map((i) => memory.subarray(i * SLAB_BYTES + 1, (i + 1) * SLAB_BYTES + 1));
    const pool: SlabPool = { take: () => misaligned.pop(), give: (slab) => void misaligned.push(slab) };
    const data = randomBytes(5 * SLAB_BYTES + 4099);
    const hash = hashes.create();
    const { contents, counts } = await writeThrough("h-einval", data, [65536], pool, undefined, hash);
    assert.ok(contents.equals(data));
    assert.equal(counts.direct, 0);
    assert.equal(await hash.digest(), sha256(data));
  });

  test("a failed write returns every slab and ends the stream with the error, hash or no hash", async (t) => {
    if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
    const path = join(dir, "h-fail");
    writeFileSync(path, "");
    const buffered = openSync(path, "r+");
    // Read-only: every write fails with EBADF.
    const direct = openSync(path, constants.O_RDONLY | constants.O_DIRECT);
    const pool = countingPool(3);
    const hash = hashes.create();
    try {
      const writer = new DirectFileWriter(direct, buffered, 0, pool, hash);
      await assert.rejects(pipeline(Readable.from([randomBytes(4 * SLAB_BYTES)]), writer), { code: "EBADF" });
      hash.discard();
      // Releases from the hashing thread arrive on a later turn.
      for (let i = 0; i < 50 && pool.out > 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(pool.out, 0);
    } finally {
      closeSync(direct);
      closeSync(buffered);
    }
  });
});
