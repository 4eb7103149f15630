/**
 * What a metadata write changed, as far as the read caches care
 * (registry/manifest-cache.ts, registry/listing.ts, the rendered listings):
 * the repositories whose tags or manifests changed, whether the catalog may
 * have changed, or everything. PostgreSQL records it in `metadata_changes`
 * inside the writing transaction (so it exists only if the write committed)
 * and announces it with NOTIFY after the commit; other replicas drop exactly
 * those scopes (docs/metadata.md).
 */
import { sql, type QueryExecutorProvider } from "kysely";
import { CATALOG_SCOPE } from "../meta-store.js";

/** Everything: GC, ferry migrate, a payload that would not fit. */
export const ALL_SCOPES = "*";

/**
 * PostgreSQL's NOTIFY payload limit is 8000 bytes; past this the
 * notification says "everything" instead of naming repositories.
 */
const MAX_PAYLOAD = 7_000;

/**
 * The channel, per schema (several installations, or the test suite's
 * schemas, may share a database and must not wake each other): an md5 keeps
 * it within PostgreSQL's 63-byte identifier limit whatever the schema's name.
 * Evaluated by PostgreSQL in the session, so writer and listener agree.
 */
export const CHANNEL_SQL = "'ferry_' || md5(coalesce(current_schema(), ''))";

export class ChangeSet {
  private readonly scopes = new Set<string>();
  /** The announcement's id (origin:sequence), once announced. */
  id: string | undefined;
  /** The announcement's text (encodePayload), once announced. */
  payload: string | undefined;

  /** Tags, manifests or the repository's existence changed. */
  repository(name: string): void {
    this.scopes.add(name);
  }

  /** A repository may have gained its first manifest or lost its last one. */
  catalog(): void {
    this.scopes.add(CATALOG_SCOPE);
  }

  all(): void {
    this.scopes.add(ALL_SCOPES);
  }

  get empty(): boolean {
    return this.scopes.size === 0;
  }

  /** The scopes to drop ("*" alone when everything changed). */
  list(): string[] {
    return this.scopes.has(ALL_SCOPES) ? [ALL_SCOPES] : [...this.scopes];
  }
}

/**
 * `id` then one scope per line: repository names cannot hold a newline (and
 * never start with "/" or equal "*", so the catalog and "everything" markers
 * cannot be confused with one).
 */
export function encodePayload(id: string, scopes: readonly string[]): string {
  const text = [id, ...scopes].join("\n");
  return Buffer.byteLength(text) <= MAX_PAYLOAD ? text : `${id}\n${ALL_SCOPES}`;
}

/** NOTIFY of "everything changed" inside `trx` (ferry migrate's copy into a live database). */
export async function announceAll(trx: QueryExecutorProvider, id: string): Promise<void> {
  await sql`select pg_notify(${sql.raw(CHANNEL_SQL)}, ${encodePayload(id, [ALL_SCOPES])})`.execute(trx);
}

/** Acknowledgements (listener.ts) start with this line; announcement ids never equal it. */
export const ACK_PREFIX = "ack\n";

/** Ids acknowledged, as few payloads as fit PostgreSQL's limit. */
export function encodeAcks(ids: readonly string[]): string[] {
  const payloads: string[] = [];
  let current: string[] = [];
  let bytes = 0;
  for (const id of ids) {
    if (bytes + id.length + 1 > MAX_PAYLOAD && current.length > 0) {
      payloads.push(ACK_PREFIX + current.join("\n"));
      current = [];
      bytes = 0;
    }
    current.push(id);
    bytes += id.length + 1;
  }
  if (current.length > 0) payloads.push(ACK_PREFIX + current.join("\n"));
  return payloads;
}

export function decodePayload(payload: string): { id: string; scopes: string[] } {
  const [id = "", ...scopes] = payload.split("\n");
  // A payload this code did not write (someone's NOTIFY by hand): drop everything, never ignore it.
  return { id, scopes: scopes.length > 0 ? scopes : [ALL_SCOPES] };
}
