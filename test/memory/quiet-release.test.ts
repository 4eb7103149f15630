/**
 * Push memory goes back once pushes have gone quiet, and only then: a pool in
 * use is never released under a push, and slabs in use keep their bytes.
 */
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { sha256 } from "../http/client.js";
import { setTimeout as sleep } from "node:timers/promises";
import { QuietRelease, type Releasable } from "../../src/memory/quiet-release.js";
import { AlignedSlabs, SLAB_BYTES } from "../../src/storage/aligned-slabs.js";
import { OffThreadHashes } from "../../src/hashing/off-thread-hashes.js";
import { loadNativeAddon } from "../../src/native/addon.js";

const addon = loadNativeAddon();
const noAddon = "reason" in addon ? addon.reason : false;
if (noAddon && process.env.REQUIRE_E2E_TOOLS === "1") throw new Error(`native addon required in CI: ${noAddon}`);

/** Feeds `data` to `hash` in 64 KiB chunks, as a request body arrives, honouring its backpressure. */
async function feed(hash: ReturnType<OffThreadHashes["create"]>, data: Buffer): Promise<void> {
  for (let offset = 0; offset < data.length; offset += 65536) {
    const wait = hash.update(data.subarray(offset, offset + 65536));
    if (wait) await wait;
  }
}

function countingPool(result = true): Releasable & { calls: number } {
  return {
    calls: 0,
    releaseIdle() {
      this.calls++;
      return result;
    },
  };
}

describe("QuietRelease", () => {
  test("releases only after quietMs without a take, once, then again after the next burst", async () => {
    let after = 0;
    const quiet = new QuietRelease(80, () => after++);
    const pool = countingPool();
    quiet.register(pool);
    // A burst of takes 30 ms apart for ~300 ms: never quiet for 80 ms.
    for (let i = 0; i < 10; i++) {
      quiet.busy();
      await sleep(30);
    }
    assert.equal(pool.calls, 0, "released in the middle of a burst");
    await sleep(200);
    assert.equal(pool.calls, 1);
    assert.equal(after, 1, "the collection and trim follow a release");
    await sleep(200);
    assert.equal(pool.calls, 1, "released again without a new take");
    quiet.busy();
    await sleep(250);
    assert.equal(pool.calls, 2, "a new burst is released too");
  });

  test("nothing released: no collection is asked for", async () => {
    let after = 0;
    const quiet = new QuietRelease(20, () => after++);
    const pool = countingPool(false);
    quiet.register(pool);
    quiet.busy();
    await sleep(120);
    assert.equal(pool.calls, 1);
    assert.equal(after, 0);
  });

  test("an unregistered pool is left alone", async () => {
    const quiet = new QuietRelease(20, () => undefined);
    const pool = countingPool();
    quiet.register(pool);
    quiet.unregister(pool);
    quiet.busy();
    await sleep(100);
    assert.equal(pool.calls, 0);
  });
});

describe("AlignedSlabs after pushes go quiet", { skip: noAddon }, () => {
  test("free slabs stop holding memory (read as zeros), slabs in use keep their bytes, and all stay usable", async () => {
    let released = 0;
    const quiet = new QuietRelease(40, () => released++);
    const pool = new AlignedSlabs(8, quiet);
    const slabs = Array.from({ length: 8 }, () => pool.take()!);
    // What a body over 64 KiB does as it takes a hashing slab; the aligned slabs themselves do not count.
    quiet.busy();
    slabs.forEach((slab, i) => slab.fill(i + 1));
    const kept = slabs.slice(0, 3);
    for (const slab of slabs.slice(3)) pool.give(slab);
    await sleep(200);
    assert.equal(released, 1);
    kept.forEach((slab, i) => assert.ok(slab.every((byte) => byte === i + 1), `slab ${i} in use lost its bytes`));
    for (const slab of slabs.slice(3)) assert.ok(slab.every((byte) => byte === 0), "a free slab still holds its old pages");
    assert.equal(pool.allocated, 8, "the slabs themselves stay in the pool");
    const again = pool.take()!;
    again.fill(9);
    assert.equal(again.length, SLAB_BYTES);
    assert.ok(again.every((byte) => byte === 9));
  });
});

describe("small pushes after a burst", { skip: noAddon }, () => {
  test("taking and returning O_DIRECT slabs (what every small push does) does not hold back the burst's release", async () => {
    let released = 0;
    const quiet = new QuietRelease(40, () => released++);
    const pool = new AlignedSlabs(8, quiet);
    const burst = Array.from({ length: 8 }, () => pool.take()!);
    quiet.busy();
    for (const slab of burst) pool.give(slab.fill(5));
    // 16 KiB pushes every 10 ms for 300 ms, each holding one slab for a moment.
    for (let i = 0; i < 30; i++) {
      const slab = pool.take()!;
      slab.fill(6, 0, 16 * 1024);
      pool.give(slab);
      await sleep(10);
    }
    assert.equal(released, 1, "the slabs of the burst were never released");
  });
});

describe("OffThreadHashes after pushes go quiet", { skip: noAddon }, () => {
  let released = 0;
  const quiet = new QuietRelease(40, () => released++);
  const hashes = new OffThreadHashes(undefined, quiet);
  after(() => hashes.close());

  async function digestOf(data: Buffer): Promise<string> {
    const hash = hashes.create();
    await feed(hash, data);
    return hash.digest();
  }

  test("the pooled slabs are released and bodies hashed afterwards still get the right digest", async () => {
    const first = randomBytes(9 * 1024 * 1024);
    assert.equal(await digestOf(first), sha256(first));
    assert.ok(hashes.workerStarted && hashes.pooledSlabs() > 0);
    await sleep(200);
    assert.equal(released, 1, "the free slabs were not released");
    const second = randomBytes(9 * 1024 * 1024 + 5);
    assert.equal(await digestOf(second), sha256(second));
  });
});

describe("the hashing thread after pushes go quiet", () => {
  const data = randomBytes(9 * 1024 * 1024);
  const expected = sha256(data);

  test("stops once no session is open, and the next body starts a new one with the right digest", async (t) => {
    const hashes = new OffThreadHashes(undefined, new QuietRelease(20, () => undefined), new QuietRelease(60, () => undefined));
    t.after(() => hashes.close());
    const first = hashes.create();
    await feed(first, data);
    assert.equal(await first.digest(), expected);
    assert.ok(hashes.workerStarted);
    await sleep(250);
    assert.equal(hashes.workerStarted, false, "the idle hashing thread still runs");
    const second = hashes.create();
    await feed(second, data);
    assert.ok(hashes.workerStarted);
    assert.equal(await second.digest(), expected);
  });

  test("sessions that never reached it (uploads started and left, small bodies) do not keep it running", async (t) => {
    const hashes = new OffThreadHashes(undefined, new QuietRelease(20, () => undefined), new QuietRelease(60, () => undefined));
    t.after(() => hashes.close());
    const abandoned = hashes.create();
    const small = hashes.create();
    await feed(small, data.subarray(0, 100_000));
    small.pause();
    const large = hashes.create();
    await feed(large, data);
    assert.equal(await large.digest(), expected);
    assert.ok(hashes.workerStarted);
    await sleep(250);
    assert.equal(hashes.workerStarted, false, "idle sessions kept the hashing thread running");
    // They still digest right when they grow, on a new thread.
    await feed(abandoned, data);
    assert.equal(await abandoned.digest(), expected);
    await feed(small, data);
    assert.equal(await small.digest(), sha256(Buffer.concat([data.subarray(0, 100_000), data])));
  });

  test("keeps running while a session is open (a client paused mid-body), and that session's digest is right", async (t) => {
    const hashes = new OffThreadHashes(undefined, new QuietRelease(20, () => undefined), new QuietRelease(60, () => undefined));
    t.after(() => hashes.close());
    const open = hashes.create();
    await feed(open, data);
    open.pause();
    await sleep(250);
    assert.ok(hashes.workerStarted, "stopped under an open session");
    assert.equal(await open.digest(), expected);
  });
});
