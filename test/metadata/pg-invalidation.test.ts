/**
 * Cache invalidation across PostgreSQL stores (docs/metadata.md, "Caches and
 * invalidation"): while a store's LISTEN connection is live its change tokens
 * come from memory and move exactly for the scopes another store's write
 * announced; a rolled-back write announces nothing; a store whose listener is
 * cut falls back to the database's WAL position and, once it listens again,
 * has dropped everything.
 *
 * Two stores in one test process stand for two replicas (each has its own
 * pool and its own LISTEN connection).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { PostgresMetaStore } from "../../src/metadata/postgres.js";
import { CATALOG_SCOPE } from "../../src/metadata/meta-store.js";
import { adminQuery, freshDatabaseUrl, postgresServer, skipUnlessPostgres } from "../helpers/postgres.js";
import { manifest } from "./meta-store-suite.js";
import { createHash } from "node:crypto";

const skip = skipUnlessPostgres();

const digest = (n: number) => `sha256:${String(n).padStart(64, "0")}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`not within ${ms} ms: ${what}`);
    await sleep(10);
  }
}

async function pair(t: { after(fn: () => Promise<void>): void }): Promise<{ a: PostgresMetaStore; b: PostgresMetaStore; schema: string }> {
  const { url, schema, drop } = await freshDatabaseUrl();
  const open = () => PostgresMetaStore.open({ url, poolSize: 2, connectTimeoutMs: 5_000, statementTimeoutMs: 30_000 });
  const a = await open();
  const b = await open();
  t.after(async () => {
    await a.close();
    await b.close();
    await drop();
  });
  return { a, b, schema };
}

describe("PostgreSQL cache invalidation (LISTEN/NOTIFY)", { skip }, () => {
  test("a live listener answers tokens without the database; another store's write moves exactly the scopes it names, before that write returns", async (t) => {
    const { a, b } = await pair(t);
    assert.equal(b.invalidationStatus()?.live, true);
    // No database behind the token while live: a token read that went to the database would throw.
    (b as unknown as { walToken: () => Promise<string> }).walToken = () => Promise.reject(new Error("token read from the database"));
    const before = { one: await b.changeToken("one"), two: await b.changeToken("two"), catalog: await b.changeToken(CATALOG_SCOPE) };
    assert.equal(await b.changeToken("one"), before.one, "nothing written: the token stays");

    await a.putManifest("one", manifest(digest(1)), "latest");
    // a waited for b's acknowledgement: b has dropped the scope by the time the write returns.
    assert.notEqual(await b.changeToken("one"), before.one, "b's token moved before a's write returned");
    assert.equal(await b.changeToken("two"), before.two, "a write to one leaves two's entries alone");
    assert.notEqual(await b.changeToken(CATALOG_SCOPE), before.catalog, "a new manifest may change the catalog");

    // Moving a tag to a manifest the repository already has: tags change, the catalog cannot.
    const catalog = await b.changeToken(CATALOG_SCOPE);
    const one = await b.changeToken("one");
    await a.putManifest("one", manifest(digest(1)), "stable");
    await until(async () => (await b.changeToken("one")) !== one, 1_000, "b sees the new tag");
    assert.equal(await b.changeToken(CATALOG_SCOPE), catalog, "no manifest row added: the catalog's entries stay");

    for (const [write, scope] of [
      [() => a.deleteTag("one", "stable"), "one"],
      [() => a.deleteManifest("one", digest(1)), CATALOG_SCOPE],
    ] as const) {
      const token = await b.changeToken(scope);
      assert.equal(await write(), true);
      await until(async () => (await b.changeToken(scope)) !== token, 1_000, `b sees ${write.toString()}`);
    }
    assert.equal(a.invalidationStatus()?.unconfirmedWrites, 0, "every write saw its own announcement come back within the bound");
  });

  test("a write whose transaction rolls back after recording its change announces nothing", async (t) => {
    const { a, b } = await pair(t);
    const token = await b.changeToken("rolled");
    const any = await b.changeToken();
    // The announcement is sent, then the transaction fails: PostgreSQL must drop the NOTIFY with it.
    const store = a as unknown as { announce: (trx: unknown, changes: unknown) => Promise<void> };
    const announce = store.announce.bind(a);
    store.announce = async (trx, changes) => {
      await announce(trx, changes);
      throw new Error("fails after announcing");
    };
    await assert.rejects(a.putManifest("rolled", manifest(digest(2)), "latest"), /fails after announcing/);
    store.announce = announce;
    // A write that commits afterwards, to another repository: once b has it, anything sent before has arrived too.
    const other = await b.changeToken("other");
    await a.putManifest("other", manifest(digest(3)), "latest");
    await until(async () => (await b.changeToken("other")) !== other, 1_000, "b sees the committed write");
    // And b's polls of the change log (every second) find no row of the rolled-back write either.
    await sleep(2_200);
    assert.equal(await b.changeToken("rolled"), token, "the rolled-back write moved nobody's token");
    assert.notEqual(await b.changeToken(), any);
    assert.equal(await a.getTaggedManifest("rolled", "latest"), null);
  });

  test("a writer that dies between its commit and its NOTIFY: the other store finds the write in the change log within about a second, exactly its scopes", async (t) => {
    const { a, b } = await pair(t);
    // The repository exists: the push takes PostgreSQL's one-statement path (pg-put-manifest.ts).
    await a.putManifest("silent", manifest(digest(7)), "first");
    const token = await b.changeToken("silent");
    const catalog = await b.changeToken(CATALOG_SCOPE);
    const untouched = await b.changeToken("untouched");
    // The transaction commits (with its change-log row); then nothing is announced and nobody is waited for.
    (a as unknown as { settle: () => Promise<void> }).settle = async () => {};
    const started = Date.now();
    await a.putManifest("silent", manifest(digest(6)), "latest");
    await until(async () => (await b.changeToken("silent")) !== token, 2_500, "b drops the write's repository");
    const took = Date.now() - started;
    assert.notEqual(await b.changeToken(CATALOG_SCOPE), catalog, "and the catalog (a new manifest)");
    assert.equal(await b.changeToken("untouched"), untouched, "no other scope");
    assert.ok(b.invalidationStatus()!.polledChanges >= 1, "found by the poll, not by an announcement");
    assert.ok(took < 2_500, `within the poll interval and a query (${took} ms)`);
  });

  test("pg_terminate_backend of the listener: tokens fall back to the WAL position (still moved by writes), then it listens again and everything cached before is dropped", async (t) => {
    const { a, b, schema } = await pair(t);
    const channel = `ferry_${createHash("md5").update(schema).digest("hex")}`;
    const base = await postgresServer();
    const live = await b.changeToken("r");
    const killed = await adminQuery(base, "select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1", [`ferry-listen ${channel}`]);
    assert.equal(killed.rowCount, 2, "both stores' listeners found by their application_name");
    await until(() => b.invalidationStatus()?.live === false, 2_000, "b notices its listener is gone");
    const fallback = await b.changeToken("r");
    assert.match(fallback, /^[0-9A-F]+\/[0-9A-F]+$/, "a WAL position while not live");
    assert.notEqual(fallback, live);
    await a.putManifest("r", manifest(digest(4)), "latest");
    if (b.invalidationStatus()?.live === false) assert.notEqual(await b.changeToken("r"), fallback, "the fallback token moves with a write");
    await until(() => b.invalidationStatus()?.live === true, 5_000, "b listens again");
    assert.equal(b.invalidationStatus()?.reconnects, 1);
    const again = await b.changeToken("r");
    assert.notEqual(again, live, "an entry cached before the cut is never served again");
    const other = await b.changeToken("s");
    await a.putManifest("s", manifest(digest(5)), "latest");
    await until(async () => (await b.changeToken("s")) !== other, 1_000, "announcements arrive again");
  });
});
