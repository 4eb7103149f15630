/**
 * The change announcement's payload (src/metadata/invalidation/changes.ts):
 * within PostgreSQL's 8000-byte NOTIFY limit whatever a write names, and a
 * payload this code did not write drops everything rather than nothing.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { ChangeSet, decodePayload, encodeAcks, encodePayload, ALL_SCOPES, ACK_PREFIX } from "../../src/metadata/invalidation/changes.js";
import { CATALOG_SCOPE } from "../../src/metadata/meta-store.js";
import { ScopedTokens } from "../../src/metadata/invalidation/scoped-tokens.js";

describe("change announcements", () => {
  it("round-trip the repositories and the catalog marker", () => {
    const changes = new ChangeSet();
    changes.repository("a/b");
    changes.catalog();
    const decoded = decodePayload(encodePayload("x:1", changes.list()));
    assert.equal(decoded.id, "x:1");
    assert.deepEqual(decoded.scopes.sort(), [CATALOG_SCOPE, "a/b"].sort());
  });

  it("say everything when the repositories would not fit in 8000 bytes", () => {
    const names = Array.from({ length: 100 }, (_, i) => `${"r".repeat(200)}${i}`);
    const payload = encodePayload("x:2", names);
    assert.ok(Buffer.byteLength(payload) < 8000);
    assert.deepEqual(decodePayload(payload).scopes, [ALL_SCOPES]);
  });

  it("a hand-written NOTIFY (no scopes) drops everything", () => {
    assert.deepEqual(decodePayload("hello").scopes, [ALL_SCOPES]);
  });

  it("acknowledgements of many ids are split below the limit", () => {
    const ids = Array.from({ length: 2000 }, (_, i) => `0123456789ab:${i}`);
    const payloads = encodeAcks(ids);
    assert.ok(payloads.length > 1);
    for (const payload of payloads) assert.ok(payload.startsWith(ACK_PREFIX) && Buffer.byteLength(payload) < 8000);
    assert.deepEqual(payloads.flatMap((p) => p.slice(ACK_PREFIX.length).split("\n")), ids);
  });

  it("tokens move for the scopes dropped only; everything moves on a wide drop", () => {
    const tokens = new ScopedTokens();
    const [a, b, any] = [tokens.token("a"), tokens.token("b"), tokens.token()];
    tokens.drop(["a"]);
    assert.notEqual(tokens.token("a"), a);
    assert.equal(tokens.token("b"), b);
    assert.notEqual(tokens.token(), any);
    const b2 = tokens.token("b");
    tokens.drop([ALL_SCOPES]);
    assert.notEqual(tokens.token("b"), b2);
    assert.doesNotMatch(tokens.token("b"), /\//, "never shaped like a WAL position");
  });
});
