/**
 * A handed-over request body (src/storage/body-handoff.ts) written by the
 * O_DIRECT writer: the file and the hash get exactly the body, the bytes the
 * stream still had first; every way the body can stop fails the append with
 * its reason, only once no receive is writing into a slab, and gives every
 * slab back. The handoff here is a stand-in serving a buffer; the real one
 * (src/http/body.ts) is exercised over sockets in test/http/body-handoff.test.ts.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { closeSync, constants, openSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { PassThrough } from "node:stream";
import { SLAB_BYTES, type SlabPool } from "../../src/storage/aligned-slabs.js";
import { DirectFileWriter } from "../../src/storage/direct-file-writer.js";
import { writeHandedOver } from "../../src/storage/handed-over.js";
import type { BodyHandoff } from "../../src/storage/body-handoff.js";
import type { FileSink, FileSinkResult } from "../../src/native/addon.js";
import { OffThreadHashes } from "../../src/hashing/off-thread-hashes.js";
import { sha256 } from "../helpers/images.js";
import { countingPool } from "../helpers/slab-pools.js";

let dir: string;
let directSupported = true;
const hashes = new OffThreadHashes();
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ferry-handoff-"));
  try {
    closeSync(openSync(join(dir, "probe"), constants.O_WRONLY | constants.O_CREAT | constants.O_DIRECT));
  } catch {
    directSupported = false;
  }
});
after(async () => {
  await hashes.close();
  await rm(dir, { recursive: true, force: true });
});

/** Serves `rest` in receive() calls, each after a short delay, as a connection would; `failAt` makes one fail. */
class BufferHandoff implements BodyHandoff {
  readonly remaining: number;
  private at = 0;
  receiving = false;
  aborted: Error | null = null;
  private wake: (() => void) | null = null;

  constructor(
    readonly streamed: number,
    private readonly rest: Buffer,
    private readonly failAt = Infinity,
    private readonly delayMs = 1,
  ) {
    this.remaining = rest.length;
  }

  async receive(target: Uint8Array, offset: number, length: number): Promise<void> {
    assert.ok(!this.receiving, "one receive at a time");
    assert.ok(length > 0 && this.at + length <= this.rest.length, `receive ${length} at ${this.at}`);
    this.receiving = true;
    try {
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, this.delayMs);
      });
      if (this.aborted) throw this.aborted;
      if (this.at + length > this.failAt) throw Object.assign(new Error("the client closed the connection"), { code: "ECONNRESET" });
      target.set(this.rest.subarray(this.at, this.at + length), offset);
      this.at += length;
    } finally {
      this.receiving = false;
    }
  }

  abort(reason: Error): void {
    this.aborted ??= reason;
    this.wake?.();
  }
}


async function append(name: string, prefix: Buffer, rest: Buffer, pool: SlabPool, handoff = new BufferHandoff(prefix.length, rest), source = new PassThrough()) {
  const path = join(dir, name);
  writeFileSync(path, "");
  const buffered = openSync(path, "r+");
  const direct = openSync(path, constants.O_WRONLY | constants.O_DIRECT);
  const hash = hashes.create();
  let counted = 0;
  try {
    const writer = new DirectFileWriter(direct, buffered, 0, pool, hash);
    // The stream never ends: its part of the body is all it will carry.
    for (let at = 0; at < prefix.length; at += 10_000) source.write(prefix.subarray(at, at + 10_000));
    const result = await writeHandedOver(source, handoff, writer, (bytes) => ((counted += bytes), null)).then(
      () => null,
      (error: Error) => error,
    );
    return { error: result, contents: readFileSync(path), digest: result ? null : await hash.digest(), counted, counts: writer.counts, handoff };
  } finally {
    hash.discard();
    closeSync(direct);
    closeSync(buffered);
  }
}

test("the file and the hash get the stream's bytes, then the handed-over rest, in order", async (t) => {
  if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
  const pool = countingPool(8);
  const prefix = randomBytes(70_000);
  const rest = randomBytes(5 * SLAB_BYTES + 12_345);
  const { error, contents, digest, counted, counts } = await append("whole", prefix, rest, pool);
  assert.equal(error, null);
  const body = Buffer.concat([prefix, rest]);
  assert.ok(contents.equals(body), "the file holds the body");
  assert.equal(digest, sha256(body));
  assert.equal(counted, body.length, "every byte was counted");
  assert.ok(counts.direct >= 5 * SLAB_BYTES, `most bytes went direct (${counts.direct})`);
  assert.equal(pool.out, 0, "every slab is back");
});

test("a body the stream had none of is all handed over", async (t) => {
  if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
  const rest = randomBytes(3 * SLAB_BYTES);
  const { error, contents, digest } = await append("none-streamed", Buffer.alloc(0), rest, countingPool(4));
  assert.equal(error, null);
  assert.ok(contents.equals(rest));
  assert.equal(digest, sha256(rest));
});

test("with no aligned memory free, handed-over bytes go through the page cache, intact", async (t) => {
  if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
  const dry: SlabPool = { take: () => undefined, give: () => assert.fail("nothing was taken") };
  const prefix = randomBytes(5000);
  const rest = randomBytes(2 * SLAB_BYTES + 7);
  const { error, contents, digest, counts } = await append("dry", prefix, rest, dry);
  assert.equal(error, null);
  assert.ok(contents.equals(Buffer.concat([prefix, rest])));
  assert.equal(digest, sha256(Buffer.concat([prefix, rest])));
  assert.equal(counts.direct, 0);
});

test("the source destroyed mid-body (client gone, lease lost) fails with its error once no receive runs", async (t) => {
  if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
  const pool = countingPool(8);
  const rest = randomBytes(6 * SLAB_BYTES);
  const handoff = new BufferHandoff(0, rest, Infinity, 30);
  const source = new PassThrough();
  source.on("error", () => undefined);
  const lost = new Error("the session's lease was lost");
  setTimeout(() => source.destroy(lost), 70);
  const { error } = await append("stopped", Buffer.alloc(0), rest, pool, handoff, source);
  assert.equal(error, lost);
  assert.equal(handoff.aborted, lost, "the receive in flight was aborted with the source's reason");
  assert.equal(handoff.receiving, false, "no receive was writing into a slab when the append failed");
  assert.equal(pool.out, 0, "every slab is back");
});

test("a receive failing (the client went away) fails the append with that error and gives every slab back", async (t) => {
  if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
  const pool = countingPool(8);
  const rest = randomBytes(4 * SLAB_BYTES);
  const handoff = new BufferHandoff(1000, rest, 2 * SLAB_BYTES + 5);
  const { error } = await append("gone", randomBytes(1000), rest, pool, handoff);
  assert.equal((error as NodeJS.ErrnoException | null)?.code, "ECONNRESET");
  assert.equal(pool.out, 0);
});

test("the count refusing bytes (more than the append may take) stops before receiving them", async (t) => {
  if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
  const path = join(dir, "too-many");
  writeFileSync(path, "");
  const buffered = openSync(path, "r+");
  const direct = openSync(path, constants.O_WRONLY | constants.O_DIRECT);
  const pool = countingPool(4);
  const handoff = new BufferHandoff(0, randomBytes(3 * SLAB_BYTES));
  const tooMany = new Error("more than 2 MiB");
  let counted = 0;
  try {
    const writer = new DirectFileWriter(direct, buffered, 0, pool);
    await assert.rejects(
      writeHandedOver(new PassThrough(), handoff, writer, (bytes) => ((counted += bytes) > 2 * SLAB_BYTES ? tooMany : null)),
      (error) => error === tooMany,
    );
    assert.equal(pool.out, 0);
  } finally {
    closeSync(direct);
    closeSync(buffered);
  }
});

/**
 * A handoff that also takes the rest in one receiveToFile, as the addon's job
 * does it (the real job is tested in test/native/receive-file.test.ts): the
 * held bytes of slabs[0] and the rest go into the file at the sink's position
 * and into its hash. Records what the writer lent it.
 */
class FileHandoff extends BufferHandoff {
  lent: { slabs: number; prefilled: number; position: number; hashed: boolean } | null = null;

  constructor(
    streamed: number,
    private readonly whole: Buffer,
    private readonly failWith: Error | null = null,
  ) {
    super(streamed, whole);
  }

  async receiveToFile(sink: FileSink): Promise<FileSinkResult> {
    this.lent = { slabs: sink.slabs.length, prefilled: sink.prefilled, position: sink.position, hashed: sink.hash !== null };
    await new Promise((resolve) => setTimeout(resolve, 5));
    if (this.failWith) throw this.failWith;
    const bytes = Buffer.concat([Buffer.from(sink.slabs[0]!.subarray(0, sink.prefilled)), this.whole]);
    writeSync(sink.bufferedFd, bytes, 0, bytes.length, sink.position);
    sink.hash?.update(bytes);
    return { errno: 0, diskFailed: false, received: this.whole.length, direct: 0, buffered: bytes.length };
  }
}

/** countingPool, also counting busy() (a large body holds push memory). */
function busyCountingPool(slabs: number): SlabPool & { out: number; busyCalls: number } {
  const pool = Object.assign(countingPool(slabs), { busyCalls: 0 });
  return Object.assign(pool, { busy: () => void pool.busyCalls++ });
}

test("a handoff that takes the rest into the file at once: lent the slab holding the stream's bytes and two more, the hash, and every slab back", async (t) => {
  if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
  const pool = busyCountingPool(8);
  const prefix = randomBytes(70_000);
  const rest = randomBytes(5 * SLAB_BYTES + 12_345);
  const handoff = new FileHandoff(prefix.length, rest);
  const { error, contents, digest, counted } = await append("into-file", prefix, rest, pool, handoff);
  assert.equal(error, null);
  const body = Buffer.concat([prefix, rest]);
  assert.ok(contents.equals(body), "the file holds the body");
  assert.equal(digest, sha256(body), "the hash went on from the stream's bytes");
  assert.deepEqual(handoff.lent, { slabs: 3, prefilled: prefix.length, position: 0, hashed: true });
  assert.equal(counted, body.length);
  assert.equal(pool.out, 0, "every slab is back");
  // Otherwise the pool's pages would stay resident after a burst of such pushes: nothing else reports them.
  assert.ok(pool.busyCalls >= 2, `reported as a large push, when it started and ended (${pool.busyCalls})`);
});

test("a handoff into the file that fails fails the append with its error and gives every slab back", async (t) => {
  if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
  const pool = busyCountingPool(8);
  const gone = Object.assign(new Error("the client closed the connection"), { code: "ECONNRESET" });
  const rest = randomBytes(3 * SLAB_BYTES);
  const { error } = await append("into-file-fails", randomBytes(1000), rest, pool, new FileHandoff(1000, rest, gone));
  assert.equal(error, gone);
  assert.equal(pool.out, 0);
});

test("a session whose hash is on the hashing thread is not handed into the file: the rest is received slab by slab", async (t) => {
  if (!directSupported) return t.skip("this filesystem refuses O_DIRECT");
  const pool = busyCountingPool(8);
  const path = join(dir, "on-worker");
  writeFileSync(path, "");
  const buffered = openSync(path, "r+");
  const direct = openSync(path, constants.O_WRONLY | constants.O_DIRECT);
  const hash = hashes.create();
  try {
    // 3 MiB fed first: past what is hashed inline, so the state is on the worker.
    const earlier = randomBytes(3 * SLAB_BYTES);
    await hash.update(earlier);
    writeFileSync(path, earlier);
    const rest = randomBytes(2 * SLAB_BYTES + 5);
    const handoff = new FileHandoff(0, rest);
    const writer = new DirectFileWriter(direct, buffered, earlier.length, pool, hash);
    await writeHandedOver(new PassThrough(), handoff, writer, () => null);
    assert.equal(handoff.lent, null, "receiveToFile was not used");
    assert.ok(readFileSync(path).equals(Buffer.concat([earlier, rest])));
    assert.equal(await hash.digest(), sha256(Buffer.concat([earlier, rest])));
    assert.equal(pool.out, 0);
  } finally {
    hash.discard();
    closeSync(direct);
    closeSync(buffered);
  }
});
