import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { OffThreadHashes } from "../../src/hashing/off-thread-hashes.js";

const SLAB = 512 * 1024;

function expected(...parts: Uint8Array[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return `sha256:${h.digest("hex")}`;
}

/** Feeds `data` in chunks of the given sizes (cycled), honouring backpressure. */
async function feed(hash: { update(c: Uint8Array): void | Promise<void> }, data: Uint8Array, sizes: number[]): Promise<number> {
  let waits = 0;
  for (let offset = 0, i = 0; offset < data.length; i++) {
    const n = Math.min(sizes[i % sizes.length], data.length - offset);
    const wait = hash.update(data.subarray(offset, offset + n));
    if (wait) {
      waits++;
      await wait;
    }
    offset += n;
  }
  return waits;
}

describe("OffThreadHashes", () => {
  const hashes = new OffThreadHashes();
  after(() => hashes.close());

  for (const [label, size] of [
    ["empty", 0],
    ["one byte", 1],
    ["just under the 64 KiB prefix", 64 * 1024 - 1],
    ["exactly the prefix", 64 * 1024],
    ["the prefix and a byte", 64 * 1024 + 1],
    ["just under a slab", SLAB - 1],
    ["exactly one slab", SLAB],
    ["one slab and a byte", SLAB + 1],
    ["9 MiB + 17", 9 * 1024 * 1024 + 17],
  ] as const) {
    test(`digest equals sha256 of the bytes: ${label}`, async () => {
      const data = randomBytes(size);
      const hash = hashes.create();
      await feed(hash, data, [65536, 1, 700_000, 4096, 3 * SLAB]);
      assert.equal(await hash.digest(), expected(data));
    });
    test(`digest equals sha256 of the bytes, small chunks: ${label}`, async () => {
      const data = randomBytes(size);
      const hash = hashes.create();
      await feed(hash, data, [1000, 30_000, 1, 40_000]);
      assert.equal(await hash.digest(), expected(data));
    });
  }

  test("a 16 KiB body never takes a 512 KiB slab", async () => {
    const local = new OffThreadHashes();
    try {
      for (const parts of [[randomBytes(16 * 1024)], [randomBytes(8000), randomBytes(8384)]]) {
        const hash = local.create();
        for (const part of parts) await hash.update(part);
        assert.equal(await hash.digest(), expected(...parts));
      }
      assert.equal(local.pooledSlabs(), 0, "no slab was allocated for small bodies");
      assert.equal(local.workerStarted, false);
    } finally {
      await local.close();
    }
  });

  test("a small first request, a pause, then more bytes: all of it is digested", async () => {
    const parts = [randomBytes(20_000), randomBytes(3 * SLAB), randomBytes(70_000)];
    const hash = hashes.create();
    for (const part of parts) {
      await feed(hash, part, [7000]);
      hash.pause();
    }
    assert.equal(await hash.digest(), expected(...parts));
  });

  test("discarding a session that holds only a prefix, then a new session, is clean", async () => {
    const h1 = hashes.create();
    await h1.update(randomBytes(10_000));
    h1.discard();
    const data = randomBytes(SLAB + 9);
    const h2 = hashes.create();
    await feed(h2, data, [50_000]);
    assert.equal(await h2.digest(), expected(data));
  });

  test("a session fed over several requests (pause between them) digests all of it", async () => {
    const parts = [randomBytes(1000), randomBytes(3 * SLAB + 5), randomBytes(10), randomBytes(SLAB)];
    const hash = hashes.create();
    for (const part of parts) {
      await feed(hash, part, [65536]);
      hash.pause();
    }
    assert.equal(await hash.digest(), expected(...parts));
  });

  test("a small first request then large ones still digests correctly (inline from then on)", async () => {
    const parts = [randomBytes(100), randomBytes(5 * SLAB)];
    const hash = hashes.create();
    await feed(hash, parts[0], [100]);
    hash.pause();
    await feed(hash, parts[1], [65536]);
    assert.equal(await hash.digest(), expected(...parts));
  });

  test("update asks the caller to wait when the worker is behind, and the wait ends", async () => {
    const data = randomBytes(32 * SLAB);
    const hash = hashes.create();
    // One update of 32 slabs queues far more than the in-flight limit at once.
    const wait = hash.update(data);
    assert.ok(wait instanceof Promise, "a large burst must ask the caller to wait");
    await wait;
    assert.equal(await hash.digest(), expected(data));
  });

  test("interleaved sessions do not mix their bytes; discarding one leaves the others intact", async () => {
    const a = randomBytes(4 * SLAB + 3);
    const b = randomBytes(2 * SLAB + 9);
    const ha = hashes.create();
    const hb = hashes.create();
    const hc = hashes.create();
    await Promise.all([feed(ha, a, [65536]), feed(hb, b, [12345]), feed(hc, randomBytes(3 * SLAB), [SLAB])]);
    hc.discard();
    assert.equal(await hb.digest(), expected(b));
    assert.equal(await ha.digest(), expected(a));
  });

  test("after close, sessions in flight fail their digest and new sessions hash inline", async () => {
    const local = new OffThreadHashes();
    const inFlight = local.create();
    await feed(inFlight, randomBytes(2 * SLAB), [65536]);
    await local.close();
    await assert.rejects(inFlight.digest());
    const fresh = local.create();
    const data = randomBytes(3 * SLAB);
    await feed(fresh, data, [65536]);
    assert.equal(await fresh.digest(), expected(data));
  });

  test("no worker thread runs for bodies under 2 MiB (small pushes and 1 MiB layers cost no thread)", async () => {
    const local = new OffThreadHashes();
    try {
      for (const size of [0, 1, 16 * 1024, SLAB - 1, SLAB, SLAB + 1, 2 * SLAB, 1024 * 1024 + 7, 4 * SLAB - 1]) {
        const data = randomBytes(size);
        const hash = local.create();
        await feed(hash, data, [65536, 700_000, 1]);
        assert.equal(await hash.digest(), expected(data), `${size} bytes`);
      }
      assert.equal(local.workerStarted, false, "bodies under 4 slabs are hashed inline");
      const large = randomBytes(4 * SLAB);
      const hash = local.create();
      await feed(hash, large, [65536]);
      assert.equal(local.workerStarted, true, "a 2 MiB body goes to the worker");
      assert.equal(await hash.digest(), expected(large));
    } finally {
      await local.close();
    }
  });

  test("held slabs keep their order when the body outgrows them, also fed in one large chunk or slab by slab", async () => {
    for (const sizes of [[65536], [SLAB], [10 * SLAB], [3, SLAB - 3, 5]]) {
      const data = randomBytes(7 * SLAB + 11);
      const hash = hashes.create();
      await feed(hash, data, sizes);
      assert.equal(await hash.digest(), expected(data), `chunks ${sizes.join(",")}`);
    }
  });

  test("a session paused with whole slabs held (a chunk ending on a slab boundary) digests all of it", async () => {
    const parts = [randomBytes(2 * SLAB), randomBytes(SLAB), randomBytes(3)];
    const hash = hashes.create();
    for (const part of parts) {
      await feed(hash, part, [SLAB]);
      hash.pause();
    }
    assert.equal(await hash.digest(), expected(...parts));
    const exact = randomBytes(3 * SLAB);
    const again = hashes.create();
    await feed(again, exact, [SLAB]);
    assert.equal(await again.digest(), expected(exact), "digest right after whole slabs");
  });

  test("discarding a session with slabs held leaves other sessions intact", async () => {
    const a = randomBytes(2 * SLAB + 1);
    const ha = hashes.create();
    const hb = hashes.create();
    await feed(hb, randomBytes(3 * SLAB), [SLAB]);
    await feed(ha, a, [65536]);
    hb.discard();
    assert.equal(await ha.digest(), expected(a));
  });

  test("closing a registry whose worker never started is clean, and later sessions hash inline", async () => {
    const local = new OffThreadHashes();
    await local.close();
    const data = randomBytes(3 * SLAB);
    const hash = local.create();
    await feed(hash, data, [65536]);
    assert.equal(await hash.digest(), expected(data));
    assert.equal(local.workerStarted, false);
  });

  describe("bytes lent in shared memory (updateShared)", () => {
    const MiB = 1024 * 1024;

    /** A caller's shared buffers, as a storage writer lends its slabs: counts what is out, fails on a double release. */
    function lender() {
      const state = { out: 0, lent: 0, syncReleases: 0 };
      const lend = (hash: { updateShared(b: Uint8Array, r: () => void): void }, bytes: Uint8Array) => {
        const shared = new Uint8Array(new SharedArrayBuffer(bytes.length + 8), 8, bytes.length);
        shared.set(bytes);
        let released = false;
        let sync = true;
        state.out++;
        state.lent++;
        hash.updateShared(shared, () => {
          assert.equal(released, false, "released twice");
          released = true;
          state.out--;
          if (sync) state.syncReleases++;
        });
        sync = false;
      };
      return { state, lend };
    }

    async function settled(state: { out: number }): Promise<void> {
      for (let i = 0; i < 100 && state.out > 0; i++) await new Promise((r) => setTimeout(r, 5));
    }

    test("mixed with copied bytes, in any order and size, the digest is that of all bytes in order", async () => {
      const { state, lend } = lender();
      const parts = [randomBytes(100), randomBytes(3 * MiB + 5), randomBytes(MiB), randomBytes(70_000), randomBytes(MiB - 3), randomBytes(1)];
      const hash = hashes.create();
      await feed(hash, parts[0], [65536]);
      lend(hash, parts[1]);
      lend(hash, parts[2]);
      await feed(hash, parts[3], [4096]);
      lend(hash, parts[4]);
      hash.pause();
      await feed(hash, parts[5], [1]);
      assert.equal(await hash.digest(), expected(...parts));
      await settled(state);
      assert.equal(state.out, 0, "every buffer lent came back");
    });

    test("once the body is large, lent buffers are hashed where they are: given back only after the worker read them", async () => {
      const { state, lend } = lender();
      const slabs = Array.from({ length: 8 }, () => randomBytes(MiB));
      const hash = hashes.create();
      for (const slab of slabs) lend(hash, slab);
      assert.ok(state.syncReleases >= 1 && state.syncReleases < slabs.length, `copied while the body could still be small, then lent (${state.syncReleases} of ${slabs.length} copied)`);
      assert.equal(await hash.digest(), expected(...slabs));
      await settled(state);
      assert.equal(state.out, 0);
    });

    test("a body lent whole under 2 MiB is hashed without the worker", async () => {
      const local = new OffThreadHashes();
      try {
        const { state, lend } = lender();
        const data = randomBytes(MiB + 17);
        const hash = local.create();
        lend(hash, data.subarray(0, MiB));
        lend(hash, data.subarray(MiB));
        assert.equal(await hash.digest(), expected(data));
        assert.equal(state.out, 0);
        assert.equal(local.workerStarted, false);
      } finally {
        await local.close();
      }
    });

    test("discarding a session gives back what it had lent out at once; other sessions are intact", async () => {
      const { state, lend } = lender();
      const doomed = hashes.create();
      const kept = hashes.create();
      const keptData = Array.from({ length: 4 }, () => randomBytes(MiB));
      for (let i = 0; i < 6; i++) lend(doomed, randomBytes(MiB));
      for (const part of keptData) lend(kept, part);
      doomed.discard();
      assert.equal(await kept.digest(), expected(...keptData));
      await settled(state);
      assert.equal(state.out, 0);
    });

    test("when the worker goes away, lent buffers come back and the digest fails (the caller re-reads)", async () => {
      const local = new OffThreadHashes();
      const { state, lend } = lender();
      const hash = local.create();
      for (let i = 0; i < 6; i++) lend(hash, randomBytes(MiB));
      await local.close();
      assert.equal(state.out, 0, "given back when the sessions failed");
      await assert.rejects(hash.digest());
      lend(hash, randomBytes(10));
      assert.equal(state.out, 0, "a failed session gives back at once");
    });
  });
});

