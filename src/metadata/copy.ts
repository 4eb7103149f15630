/**
 * Copies one metadata database into another with the same schema (`ferry
 * migrate`: an embedded SQLite installation into PostgreSQL). Both sides are
 * Kysely over the shared schema, so the copy is table by table, row for row,
 * manifest bytes untouched; then it verifies (row counts per table, every
 * manifest's bytes hash to its digest, and one hash over all manifest bytes is
 * equal on both sides).
 *
 * Leases are not copied (they belong to running processes), nor failed
 * logins (they expire within minutes); everything else the store holds is:
 * repositories, blobs, links, manifests, references, tags, foreign-layer
 * marks, sources, proofs, the proxy cache index, source health, the re-check
 * round, upload sessions and the token signing keys (tokens stay valid).
 */
import { createHash } from "node:crypto";
import { sql, type Kysely } from "kysely";
import type { SqlDialect } from "./sql/dialect.js";
import type { MetadataDatabase } from "./sql/schema.js";
import { announceAll } from "./invalidation/changes.js";

// metadata_changes: a few minutes of announcements for running replicas (ferry migrate announces its copy itself).
type Table = Exclude<keyof MetadataDatabase, "leases" | "ferry_schema" | "login_failures" | "metadata_changes">;

/** Copied in this order; each with its key (the copy pages by it). */
const TABLES: Array<{ name: Table; key: string[] }> = [
  { name: "repositories", key: ["id"] },
  { name: "blobs", key: ["digest"] },
  { name: "repository_blobs", key: ["repository_id", "digest"] },
  { name: "manifests", key: ["repository_id", "digest"] },
  { name: "manifest_references", key: ["repository_id", "manifest_digest", "kind", "child_digest"] },
  { name: "tags", key: ["repository_id", "name"] },
  { name: "foreign_layers", key: ["repository_id", "digest"] },
  { name: "foreign_layer_sources", key: ["repository_id", "digest", "manifest_digest", "url"] },
  { name: "foreign_layer_proofs", key: ["repository_id", "digest", "url"] },
  { name: "foreign_cache", key: ["digest"] },
  { name: "foreign_source_health", key: ["url"] },
  { name: "foreign_recheck_rounds", key: ["name"] },
  { name: "uploads", key: ["id"] },
  { name: "token_signing_keys", key: ["generation"] },
];

/** Rows per read and per insert; fewer manifests (up to 4 MiB each) so a page stays small in memory. */
const PAGE = 500;
const MANIFEST_PAGE = 100;

export class TargetNotEmptyError extends Error {}

export interface CopyReport {
  rows: Record<string, number>;
  manifests: number;
  elapsedMs: number;
  /** Hash over every manifest's repository, digest and bytes, equal on both sides. */
  manifestHash: string;
  /** Manifests (repository@digest) whose stored bytes do not hash to their digest, in the source already. */
  mismatched: string[];
}

export interface CopyOptions {
  /** Empty the target's tables first instead of refusing a target that has metadata. */
  replace: boolean;
  onProgress?: (table: string, copied: number) => void;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Loose = Kysely<any>;

export async function copyMetadata(
  source: Kysely<MetadataDatabase>,
  target: Kysely<MetadataDatabase>,
  targetDialect: SqlDialect,
  options: CopyOptions,
): Promise<CopyReport> {
  const started = Date.now();
  const from = source as Loose;
  const to = target as Loose;
  const rows: Record<string, number> = {};
  await to.transaction().execute(async (trx) => {
    if (!options.replace) {
      for (const { name } of TABLES) {
        const present = await trx.selectFrom(name).select(sql.lit(1).as("x")).limit(1).executeTakeFirst();
        if (present) throw new TargetNotEmptyError(`the target already holds metadata (table ${name} is not empty); pass --force to replace it`);
      }
    } else {
      for (const { name } of [...TABLES].reverse()) await trx.deleteFrom(name).execute();
    }
    for (const { name, key } of TABLES) {
      let copied = 0;
      for (let offset = 0; ; offset += name === "manifests" ? MANIFEST_PAGE : PAGE) {
        let query = from.selectFrom(name).selectAll();
        for (const column of key) query = query.orderBy(column);
        const size = name === "manifests" ? MANIFEST_PAGE : PAGE;
        const page = (await query.limit(size).offset(offset).execute()) as Record<string, unknown>[];
        if (page.length === 0) break;
        await trx.insertInto(name).values(page).execute();
        copied += page.length;
        options.onProgress?.(name, copied);
        if (page.length < size) break;
      }
      rows[name] = copied;
    }
    // New repositories must not reuse the copied ids.
    await targetDialect.afterIdsCopied(trx, "repositories", "id");
    // Replicas already running on the target drop every cached listing at commit.
    if (targetDialect.name === "postgres") await announceAll(trx, "migrate");
  });
  const [sourceHash, targetHash] = [await manifestHash(source), await manifestHash(target)];
  if (sourceHash.count !== targetHash.count || sourceHash.hash !== targetHash.hash) {
    throw new Error(`verification failed: the target's manifests differ from the source's (${targetHash.count} of ${sourceHash.count})`);
  }
  for (const { name } of TABLES) {
    const count = Number((await to.selectFrom(name).select((eb) => eb.fn.countAll().as("n")).executeTakeFirstOrThrow()).n);
    if (count !== rows[name]) throw new Error(`verification failed: table ${name} has ${count} rows in the target, ${rows[name]} were copied`);
  }
  return { rows, manifests: rows.manifests ?? 0, elapsedMs: Date.now() - started, manifestHash: sourceHash.hash, mismatched: sourceHash.mismatched };
}

/** One SHA-256 over every manifest (repository, digest, bytes) in key order; and manifests whose sha256 bytes do not match their digest. */
async function manifestHash(db: Kysely<MetadataDatabase>): Promise<{ hash: string; count: number; mismatched: string[] }> {
  const all = createHash("sha256");
  const mismatched: string[] = [];
  let count = 0;
  for (let offset = 0; ; offset += MANIFEST_PAGE) {
    const page = await db
      .selectFrom("manifests as m")
      .innerJoin("repositories as r", "r.id", "m.repository_id")
      .select(["r.name", "m.digest", "m.content"])
      .orderBy("r.name")
      .orderBy("m.digest")
      .limit(MANIFEST_PAGE)
      .offset(offset)
      .execute();
    for (const row of page) {
      all.update(`${row.name}\n${row.digest}\n${row.content.length}\n`).update(row.content);
      if (row.digest.startsWith("sha256:") && `sha256:${createHash("sha256").update(row.content).digest("hex")}` !== row.digest) {
        mismatched.push(`${row.name}@${row.digest}`);
      }
      count++;
    }
    if (page.length < MANIFEST_PAGE) break;
  }
  return { hash: all.digest("hex"), count, mismatched };
}
