/**
 * Auth state every replica shares through the metadata store: failed logins
 * (auth/rate-limit.ts) and the token signing key set (auth/key-set.ts).
 * Every write is one statement, so concurrent replicas need no lock: a
 * failure is a row of its own (counts add up, nothing is read-modify-written),
 * and a key generation is inserted only if absent (two replicas starting or
 * rotating at once agree on the one that got in).
 */
import { sql } from "kysely";
import type { LoginFailureKind, SigningKeyRecord } from "../meta-store.js";
import type { SqlDialect } from "./dialect.js";
import { changed, type Db } from "./store.js";

export class SqlAuthState {
  async recordFailure(q: Db, kind: LoginFailureKind, key: string, at: number): Promise<void> {
    await q.insertInto("login_failures").values({ kind, key, at }).execute();
  }

  /**
   * Inside a write transaction: SQLite's is serialized (BEGIN IMMEDIATE);
   * PostgreSQL takes a transaction-scoped advisory lock on the key, so two
   * claims for one key count one after the other.
   */
  async claimAttempt(trx: Db, dialect: SqlDialect, kind: LoginFailureKind, key: string, at: number, since: number, limit: number): Promise<number | null> {
    if (dialect.rowLocks) await sql`select pg_advisory_xact_lock(hashtextextended(${`login:${kind}:${key}`}, 0))`.execute(trx);
    const row = await trx
      .selectFrom("login_failures")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .where("kind", "=", kind)
      .where("key", "=", key)
      .where("at", ">", since)
      .executeTakeFirstOrThrow();
    if (Number(row.n) >= limit) return null;
    const inserted = await trx.insertInto("login_failures").values({ kind, key, at }).returning("id").executeTakeFirstOrThrow();
    return Number(inserted.id);
  }

  async releaseAttempt(q: Db, id: number): Promise<void> {
    await q.deleteFrom("login_failures").where("id", "=", id).execute();
  }

  async failureTimes(q: Db, kind: LoginFailureKind, key: string, since: number, limit: number): Promise<number[]> {
    const rows = await q
      .selectFrom("login_failures")
      .select("at")
      .where("kind", "=", kind)
      .where("key", "=", key)
      .where("at", ">", since)
      .orderBy("at", "desc")
      .limit(limit)
      .execute();
    return rows.map((row) => row.at).reverse();
  }

  async prune(q: Db, before: number, maxRows: number): Promise<number> {
    let deleted = changed(await q.deleteFrom("login_failures").where("at", "<=", before).executeTakeFirst());
    const count = async () => Number((await q.selectFrom("login_failures").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n);
    let excess = (await count()) - maxRows;
    if (excess > 0) {
      const singles = changed(
        await q
          .deleteFrom("login_failures")
          .where("id", "in", (eb) =>
            eb
              .selectFrom("login_failures")
              .select((s) => s.fn.min("id").as("id"))
              .groupBy(["kind", "key"])
              .having((h) => h.fn.countAll(), "=", 1)
              .orderBy((o) => o.fn.min("at"))
              .limit(excess),
          )
          .executeTakeFirst(),
      );
      deleted += singles;
      excess -= singles;
    }
    if (excess > 0) {
      deleted += changed(
        await q
          .deleteFrom("login_failures")
          .where("id", "in", (eb) => eb.selectFrom("login_failures").select("id").orderBy("at").limit(excess))
          .executeTakeFirst(),
      );
    }
    return deleted;
  }

  async signingKeys(q: Db): Promise<SigningKeyRecord[]> {
    const rows = await q.selectFrom("token_signing_keys").selectAll().orderBy("generation").execute();
    return rows.map((row) => ({
      generation: row.generation,
      kid: row.kid,
      algorithm: row.algorithm === "RS256" ? "RS256" : "ES256",
      privateKey: row.private_key,
      createdAt: row.created_at,
    }));
  }

  async addSigningKey(q: Db, key: SigningKeyRecord): Promise<boolean> {
    const result = await q
      .insertInto("token_signing_keys")
      .values({ generation: key.generation, kid: key.kid, algorithm: key.algorithm, private_key: key.privateKey, created_at: key.createdAt })
      .onConflict((oc) => oc.doNothing())
      .executeTakeFirst();
    return changed(result) > 0;
  }
}
