/**
 * The shared token signing key set (src/auth/key-set.ts) as /token/jwks sees
 * it: a key rotated in by another replica, or another serving thread of this
 * one, is listed within about a second, without this copy ever having seen a
 * token signed with it; and the store is read at most once a second however
 * often the list is asked for.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { RELOAD_MS, StoredKeySet, rotateSigningKey, type KeyStore } from "../../src/auth/key-set.js";
import type { SigningKeyRecord } from "../../src/metadata/meta-store.js";

function memoryStore(): KeyStore & { reads: number } {
  const records: SigningKeyRecord[] = [];
  const store = {
    reads: 0,
    async listSigningKeys() {
      store.reads++;
      return records.slice().sort((a, b) => a.generation - b.generation);
    },
    async addSigningKey(record: SigningKeyRecord) {
      if (records.some((r) => r.generation === record.generation)) return false;
      records.push(record);
      return true;
    },
  };
  return store as unknown as KeyStore & { reads: number };
}

describe("shared signing key set, as /token/jwks lists it", () => {
  it("lists a key another replica rotated in within a second, reading the store at most once a second", async () => {
    let clock = 1_000_000;
    const now = () => clock;
    const store = memoryStore();
    const mine = await StoredKeySet.open(store, "ES256", 300_000, now);
    const first = mine.accepted().map((k) => k.kid);
    assert.equal(first.length, 1);

    // Another replica (or serving thread) rotates; this copy has seen no token of the new key.
    const rotated = await rotateSigningKey(store, "ES256", clock);
    clock += 1_100;
    const reads = store.reads;
    await Promise.all(Array.from({ length: 50 }, () => mine.fresh()));
    assert.equal(store.reads, reads + 1, "fifty lists at once read the store once");
    assert.deepEqual(mine.accepted().map((k) => k.kid).sort(), [first[0]!, rotated.kid].sort(), "both keys listed");

    // Within the second, no further read.
    clock += 500;
    await mine.fresh();
    assert.equal(store.reads, reads + 1);
    assert.ok(RELOAD_MS > 1_100, "signing alone would have kept the old copy");
  });

  it("keeps listing the keys it has when the store stops answering", async () => {
    let clock = 1_000_000;
    const store = memoryStore();
    const mine = await StoredKeySet.open(store, "ES256", 300_000, () => clock);
    const listed = mine.accepted().map((k) => k.kid);
    store.listSigningKeys = async () => {
      throw new Error("connection terminated");
    };
    clock += 5_000;
    await mine.fresh();
    assert.deepEqual(mine.accepted().map((k) => k.kid), listed);
  });
});
