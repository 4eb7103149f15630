/**
 * PostgreSQL metadata store (`metadata.driver: postgres`): for several
 * replicas sharing one database. The pool, the start-up checks and the change
 * token live here; the queries and the schema are shared with SQLite
 * (sql/store.ts, sql/migrations.ts).
 *
 * Change tokens (docs/metadata.md, "Caches and invalidation"): while this
 * replica's LISTEN connection is live (invalidation/listener.ts), per scope
 * from memory, moved by every replica's announcements (a change-log row
 * inside each writing transaction, a NOTIFY after its commit); a writer
 * waits, bounded, for the other replicas to acknowledge before acknowledging. When the listener is not live,
 * `pg_current_wal_insert_lsn()`, one round trip: a commit inserts its WAL
 * record before it becomes visible, so a token read after a write became
 * visible differs from every token read before it. Any write in the cluster
 * moves it, so it only ever empties caches too often, never too rarely. Those
 * reads go out on two connections of their own; callers arriving while both
 * are busy share the next one (see walToken).
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { Kysely, PostgresDialect, sql, type Transaction } from "kysely";
import { ChangeSet, CHANNEL_SQL, encodePayload } from "./invalidation/changes.js";
import { ChangeListener, type ListenerStatus } from "./invalidation/listener.js";
import { ScopedTokens } from "./invalidation/scoped-tokens.js";
import { postgresDialect } from "./sql/dialect.js";
import { migrate } from "./sql/migrations.js";
import type { LeaseDatabase, MetadataDatabase } from "./sql/schema.js";
import { SqlMetaStore } from "./sql/store.js";
import { MissingReferencesError, type ManifestWrite, type PutManifestResult } from "./meta-store.js";
import { putManifestInOneStatement } from "./pg-put-manifest.js";

export interface PostgresOptions {
  /** postgres://user:password@host:port/database (the password never reaches a log or an error). */
  url: string;
  poolSize: number;
  /** Time to establish a connection. */
  connectTimeoutMs: number;
  /** Longest a statement may run before PostgreSQL cancels it. */
  statementTimeoutMs: number;
  /** The configuration key the URL came from, for error messages. */
  key?: string;
  /**
   * Longest a write waits, before it is acknowledged, for its own change
   * announcement to come back on this replica's LISTEN connection (default 200).
   */
  invalidationWaitMs?: number;
  /** Off: no LISTEN connection, every token read from the WAL position (tests, tools such as ferry migrate). */
  listen?: boolean;
}

/** Tries of a statement that lost a deadlock or serialization race (as the store's transactions). */
const RETRIES = 3;

/** Default bound on a writer's wait for its own announcement. */
const INVALIDATION_WAIT_MS = 200;

/** Start-up could not use the database: names the key and what PostgreSQL answered. */
export class PostgresStartError extends Error {}

const INT8 = 20;
const NUMERIC = 1700;

/**
 * int8 (sizes, epoch ms) and numeric (SUM) arrive as strings: parsed to
 * numbers, which hold every size and timestamp exactly (below 2^53).
 */
const types = {
  getTypeParser(oid: number, format?: "text" | "binary") {
    if (oid === INT8 || oid === NUMERIC) return (value: string) => safeNumber(value);
    return pg.types.getTypeParser(oid, format);
  },
} as pg.CustomTypesConfig;

function safeNumber(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) && !Number.isFinite(value)) throw new Error(`integer out of range: ${text}`);
  return value;
}

/** Query parameters node-postgres (like libpq) takes as secrets: `?password=` works as well as the userinfo. */
const SECRET_PARAMS = new Set(["password", "sslpassword", "sslkey"]);

/** The URL with its password replaced, for messages. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    for (const name of [...parsed.searchParams.keys()]) if (SECRET_PARAMS.has(name.toLowerCase())) parsed.searchParams.set(name, "***");
    return parsed.toString();
  } catch {
    return "(an unparsable URL)";
  }
}

/**
 * Connections of their own for token reads, each with at most one query in
 * flight. Two, so a request arriving while one read is out is answered by a
 * read sent at once instead of waiting a whole round trip for the first to come
 * back and then a second one (under 32 connections the wait was 1.5 round trips
 * on average, and a round trip to a busy PostgreSQL is milliseconds).
 */
const TOKEN_CONNECTIONS = 2;

interface TokenSlot {
  client: Promise<pg.Client> | undefined;
  busy: boolean;
}

interface QueuedToken {
  promise: Promise<string>;
  resolve(token: string): void;
  reject(error: unknown): void;
}

export class PostgresMetaStore extends SqlMetaStore {
  private readonly tokenSlots: TokenSlot[] = Array.from({ length: TOKEN_CONNECTIONS }, () => ({ client: undefined, busy: false }));
  /** Callers that arrived while every slot was busy: they share the read sent when a slot frees. */
  private queuedToken: QueuedToken | undefined;
  /** Tokens served from memory while the listener is live. */
  private readonly tokens = new ScopedTokens();
  private listener: ChangeListener | undefined;
  /** This process's announcements are `<origin>:<sequence>`. */
  private readonly origin = randomBytes(6).toString("hex");
  private sequence = 0;
  private invalidationWaitMs = INVALIDATION_WAIT_MS;

  private constructor(
    db: Kysely<MetadataDatabase>,
    private readonly pool: pg.Pool,
    private readonly clientConfig: pg.ClientConfig,
  ) {
    super(db, postgresDialect, db as unknown as Kysely<LeaseDatabase>);
  }

  /** Starts the LISTEN connection; its first attempt ends before this resolves (live or falling back). */
  private async listen(): Promise<void> {
    this.listener = new ChangeListener({
      clientConfig: this.clientConfig,
      onChange: (scopes) => this.tokens.drop(scopes),
      // Either way every cached entry goes: announcements made while not live were lost.
      onLiveChange: () => this.tokens.dropAll(),
    });
    await this.listener.start();
  }

  /** Whether cache invalidation is live (for /healthz and metrics); undefined when this store does not listen. */
  invalidationStatus(): ListenerStatus | undefined {
    return this.listener?.status();
  }

  /** Connects, checks the database answers, and creates or migrates the schema. */
  static async open(options: PostgresOptions): Promise<PostgresMetaStore> {
    const key = options.key ?? "metadata.postgres.url";
    let config: pg.PoolConfig;
    try {
      new URL(options.url);
      config = { connectionString: options.url };
    } catch {
      throw new PostgresStartError(`${key}: not a postgres:// URL`);
    }
    const clientConfig: pg.ClientConfig = {
      ...config,
      connectionTimeoutMillis: options.connectTimeoutMs,
      statement_timeout: options.statementTimeoutMs,
      // A query whose connection died mid-way must not hang its request.
      query_timeout: options.statementTimeoutMs + options.connectTimeoutMs,
      types,
      application_name: "ferry",
    };
    const pool = new pg.Pool({ ...clientConfig, max: options.poolSize, idleTimeoutMillis: 30_000 });
    // An idle connection that PostgreSQL drops (restart, network) is an error event on the pool, not a crash.
    pool.on("error", () => {});
    const db = new Kysely<MetadataDatabase>({ dialect: new PostgresDialect({ pool }) });
    const store = new PostgresMetaStore(db, pool, clientConfig);
    try {
      await sql`select 1`.execute(db).catch((error: unknown) => {
        throw new PostgresStartError(`${key} (${redactUrl(options.url)}): ${describe(error)}`);
      });
      await migrate(db, postgresDialect);
      store.invalidationWaitMs = options.invalidationWaitMs ?? INVALIDATION_WAIT_MS;
      if (options.listen !== false) await store.listen();
    } catch (error) {
      await db.destroy().catch(() => {});
      throw error;
    }
    return store;
  }

  /**
   * The token of `scope` (a repository, CATALOG_SCOPE; none: any change).
   * Live listener: from memory, no I/O. Otherwise the WAL position.
   */
  changeToken(scope?: string): Promise<string> {
    if (this.listener?.isLive) return Promise.resolve(this.tokens.token(scope));
    return this.walToken();
  }

  /**
   * A manifest push as one autocommit statement (pg-put-manifest.ts) instead of
   * a transaction of six round trips; a repository not created yet and
   * manifests with foreign layers take the transaction path.
   */
  override async putManifest(repository: string, manifest: ManifestWrite, tag?: string | readonly string[]): Promise<PutManifestResult> {
    if (manifest.foreignLayers.length > 0) return super.putManifest(repository, manifest, tag);
    const tags = [...new Set(typeof tag === "string" ? [tag] : (tag ?? []))];
    const now = Date.now();
    for (let attempt = 1; ; attempt++) {
      // The announcement without and with the catalog (a new manifest row may be the repository's first).
      const changes = new ChangeSet();
      changes.repository(repository);
      const plain = this.recordChanges(changes);
      changes.catalog();
      const catalog = encodePayload(changes.id!, changes.list());
      let result;
      try {
        result = await putManifestInOneStatement(this.db, this.pool, repository, manifest, tags, now, { plain, catalog });
      } catch (error) {
        // The statement may have committed before its connection failed: this process drops the entries anyway.
        await this.settle(changes, false);
        const code = (error as { code?: unknown }).code;
        if (attempt >= RETRIES || (code !== "40P01" && code !== "40001")) throw error;
        continue;
      }
      if (result.repositoryId === undefined) return super.putManifest(repository, manifest, tag);
      if (!result.written) {
        const gone = [...manifest.blobs.filter((digest) => !result.blobs.has(digest)), ...manifest.manifests.filter((digest) => !result.children.has(digest))];
        // (Nothing missing yet not written cannot happen; the transaction path would say what it is.)
        if (gone.length === 0) return super.putManifest(repository, manifest, tag);
        throw new MissingReferencesError(gone);
      }
      const written = new ChangeSet();
      written.repository(repository);
      if (result.inserted) written.catalog();
      written.id = changes.id;
      written.payload = result.inserted ? catalog : plain;
      await this.settle(written, true);
      return { previous: result.previous };
    }
  }

  /**
   * Inside the writing transaction: a change-log row, which commits (or rolls
   * back) with the write and costs no more than any other row (normal group
   * commit). The NOTIFY goes out after commit (settle): a transaction that
   * notifies holds PostgreSQL's global notify lock through its WAL flush, which
   * made every replica's writes commit one at a time.
   */
  protected override async announce(trx: Transaction<MetadataDatabase>, changes: ChangeSet): Promise<void> {
    // Already written by the write's own last statement (putManifest), and nothing added since.
    if (changes.id !== undefined && changes.payload === encodePayload(changes.id, changes.list())) return;
    const payload = this.recordChanges(changes);
    await sql`insert into metadata_changes (xid, payload, created_at)
              values (txid_current(), ${payload}, ${postgresDialect.nowMs(undefined)})`.execute(trx);
  }

  /** Names the announcement and encodes it; the caller inserts the change-log row inside the write's transaction. */
  protected override recordChanges(changes: ChangeSet): string {
    const id = (changes.id = `${this.origin}:${++this.sequence}`);
    return (changes.payload = encodePayload(id, changes.list()));
  }

  /**
   * This replica's own entries go at once (read-your-writes here is exact);
   * then the announcement is sent, and before the write is acknowledged this
   * waits (bounded) until every replica listening then has applied it
   * (listener.ts): after that no replica serves what the write replaced.
   */
  protected override async settle(changes: ChangeSet, committed: boolean): Promise<void> {
    this.tokens.drop(changes.list());
    const { id, payload } = changes;
    if (id === undefined || payload === undefined || !committed) return;
    if (this.listener?.isLive && this.listener.expect(id)) {
      const listeners = await this.listener.publish(payload);
      if (listeners !== undefined) {
        this.listener.members(id, listeners);
        await this.listener.waitFor(id, this.invalidationWaitMs);
        return;
      }
      this.listener.forget(id);
    }
    // This replica's listener is down (or it has none: tools): sent on a pool connection, and
    // acknowledgements cannot reach this replica. If others listen, give them the whole bound to
    // apply it; if it could not be sent, their polls find the change-log row. Either way unconfirmed.
    const listeners = await this.publishOnPool(payload);
    if (!this.listener || listeners?.length === 0) return;
    if (listeners !== undefined) await new Promise((resolve) => setTimeout(resolve, this.invalidationWaitMs));
    this.listener.countUnconfirmed();
  }

  /**
   * NOTIFY in a transaction of its own without waiting for its WAL flush (the
   * notify lock is held until then); the listeners listening then. Undefined
   * when it failed: the other replicas' polls of the change log find the write.
   */
  private async publishOnPool(payload: string): Promise<number[] | undefined> {
    try {
      return await this.db.transaction().execute(async (trx) => {
        await sql`set local synchronous_commit = off`.execute(trx);
        const { rows } = await sql<{ listeners: number[] }>`
          select pg_notify(${sql.raw(CHANNEL_SQL)}, ${payload}) as sent,
                 array(select pid from pg_stat_activity
                       where datname = current_database() and application_name = 'ferry-listen ' || ${sql.raw(CHANNEL_SQL)}) as listeners`.execute(trx);
        return rows[0]?.listeners ?? [];
      });
    } catch {
      return undefined;
    }
  }

  /**
   * A WAL position read sent after the caller arrived (an earlier one could predate
   * the write the caller must see): on an idle token connection at once, else
   * shared with every other caller waiting, sent when a connection frees.
   */
  private walToken(): Promise<string> {
    const slot = this.tokenSlots.find((candidate) => !candidate.busy);
    if (slot) return this.sendToken(slot);
    if (!this.queuedToken) {
      let resolve!: (token: string) => void;
      let reject!: (error: unknown) => void;
      const promise = new Promise<string>((res, rej) => ((resolve = res), (reject = rej)));
      this.queuedToken = { promise, resolve, reject };
    }
    return this.queuedToken.promise;
  }

  private sendToken(slot: TokenSlot): Promise<string> {
    slot.busy = true;
    const result = this.readToken(slot);
    const free = (): void => {
      slot.busy = false;
      const queued = this.queuedToken;
      if (!queued) return;
      this.queuedToken = undefined;
      this.sendToken(slot).then(queued.resolve, queued.reject);
    };
    result.then(free, free);
    return result;
  }

  private async readToken(slot: TokenSlot): Promise<string> {
    const query = { text: "select pg_current_wal_insert_lsn()::text", name: "ferry_change_token", rowMode: "array" as const };
    let client: pg.Client;
    try {
      client = await this.tokenConnection(slot);
    } catch {
      // No dedicated connection right now: the pool answers (and reports its own errors).
      return (await this.pool.query<[string]>(query)).rows[0]![0];
    }
    try {
      return (await client.query<[string]>(query)).rows[0]![0];
    } catch (error) {
      // A broken connection is replaced on the next read.
      slot.client = undefined;
      client.end().catch(() => {});
      throw error;
    }
  }

  private tokenConnection(slot: TokenSlot): Promise<pg.Client> {
    slot.client ??= (async () => {
      const client = new pg.Client(this.clientConfig);
      client.on("error", () => {
        slot.client = undefined;
      });
      try {
        await client.connect();
      } catch (error) {
        slot.client = undefined;
        throw error;
      }
      return client;
    })();
    return slot.client;
  }

  override async close(): Promise<void> {
    await this.listener?.close();
    for (const slot of this.tokenSlots) {
      const client = slot.client;
      slot.client = undefined;
      if (client) await (await client.catch(() => undefined))?.end().catch(() => {});
    }
    await super.close();
  }
  /** Whether the database answers within `timeoutMs` (for health checks). */
  async ping(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.pool.query("select 1").then(() => true),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
      ]);
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** What PostgreSQL (or the network) answered, in words an operator can act on; never the password. */
export function describe(error: unknown): string {
  const e = error as { code?: string; message?: string; errors?: Array<{ message?: string }> };
  const message = e.message || e.errors?.map((inner) => inner.message).join("; ") || String(error);
  switch (e.code) {
    case "ECONNREFUSED":
    case "ENOTFOUND":
    case "EHOSTUNREACH":
    case "ETIMEDOUT":
      return `PostgreSQL is unreachable (${message})`;
    case "28P01":
    case "28000":
      return `PostgreSQL refused the login: ${message}`;
    case "3D000":
      return `PostgreSQL answered that the database is missing: ${message} (create it, or fix the URL)`;
    default:
      if (/timeout/i.test(message)) return `PostgreSQL did not answer in time (${message})`;
      return `PostgreSQL answered: ${message}`;
  }
}
