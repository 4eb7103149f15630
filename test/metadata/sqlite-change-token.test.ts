/**
 * SQLite's change token is read once per event-loop turn for every caller of
 * that turn (reading it per request was ~8% of a cached manifest GET), yet a
 * caller must still see every write that completed before it asked, however
 * it was made: this connection, another connection, another process.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { SqliteMetaStore } from "../../src/metadata/sqlite.js";

describe("sqlite change token", () => {
  let dir: string;
  let store: SqliteMetaStore;
  let other: Database.Database;
  let rows = 0;
  // Another connection to the same file: what another --workers process or `ferry gc` looks like from here.
  const writeElsewhere = () => other.prepare("INSERT INTO token_probe (n) VALUES (?)").run(++rows);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "ferry-token-"));
    store = await SqliteMetaStore.open(join(dir, "metadata.db"));
    other = new Database(join(dir, "metadata.db"));
    other.pragma("busy_timeout = 10000");
    other.exec("CREATE TABLE token_probe (n INTEGER)");
  });
  after(async () => {
    other.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("callers in one turn share one read", async () => {
    const first = store.changeToken();
    const second = store.changeToken();
    assert.equal(first, second, "the same pending read");
    assert.equal(await first, await second);
  });

  it("sees a write by another connection made after the call, in the same turn", async () => {
    const before = await store.changeToken();
    const pending = store.changeToken();
    writeElsewhere();
    assert.notEqual(await pending, before);
  });

  it("never reuses a token from an earlier turn", async () => {
    for (let i = 0; i < 5; i++) {
      const before = await store.changeToken();
      writeElsewhere();
      assert.notEqual(await store.changeToken(), before, `round ${i}: a committed write moves the next token`);
    }
  });

  it("does not move without a write", async () => {
    const before = await store.changeToken();
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(await store.changeToken(), before);
  });
});
