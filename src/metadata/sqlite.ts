/**
 * SQLite metadata store (the embedded default): the connection, its pragmas
 * and the change token. The queries and the schema are shared with
 * PostgreSQL (sql/store.ts, sql/migrations.ts).
 *
 * WAL mode lets several worker processes share one database file; every
 * multi-row change is a transaction (BEGIN IMMEDIATE: sql/sqlite-driver.ts),
 * so a crash leaves either the old or the new state.
 */
import Database from "better-sqlite3";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { Kysely } from "kysely";
import { sqliteDialect } from "./sql/dialect.js";
import { createLeaseTable, migrate } from "./sql/migrations.js";
import type { LeaseDatabase, MetadataDatabase } from "./sql/schema.js";
import { BetterSqliteDialect } from "./sql/sqlite-driver.js";
import { SqlMetaStore } from "./sql/store.js";

export class SqliteMetaStore extends SqlMetaStore {
  private readonly raw: Database.Database;
  private readonly leaseFile: Database.Database | undefined;
  private readonly dataVersion: Database.Statement<[], number>;
  private readonly totalChanges: Database.Statement<[], number>;
  /** The token read at the end of this event-loop turn's poll phase, shared by every request that asked for it (changeToken). */
  private nextToken: Promise<string> | null = null;
  /** Settles when the schema is current; every query waits for it. */
  readonly ready: Promise<void>;

  /** Opens (creating or migrating) the database; see open() to wait for the migration. */
  constructor(path: string) {
    if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
    const raw = new Database(path);
    raw.pragma("synchronous = FULL");
    // Several worker processes share this file. Writers wait for each other
    // (busy_timeout), and every write transaction is BEGIN IMMEDIATE.
    raw.pragma("busy_timeout = 10000");
    raw.pragma("journal_mode = WAL");
    raw.pragma("foreign_keys = OFF");

    // Leases in their own file (`<metadata>.leases`) with synchronous = NORMAL:
    // a lease is worth nothing after a crash (its holder is gone), so its
    // writes need no fsync, and every PATCH, PUT and blob commit takes one.
    // SQLite has one writer at a time per database, and lease writes queued
    // behind metadata commits (each an fsync) cost small pushes 10-20% of
    // their throughput when they shared the file. The clock is this
    // machine's; replicas on several machines use PostgreSQL (its now()).
    const leaseFile = path === ":memory:" ? undefined : new Database(`${path}.leases`);
    if (leaseFile) {
      leaseFile.pragma("busy_timeout = 10000");
      leaseFile.pragma("journal_mode = WAL");
      leaseFile.pragma("synchronous = NORMAL");
    }

    const file = path === ":memory:" ? undefined : resolve(path);
    const leasePath = file === undefined ? undefined : `${file}.leases`;
    let ready: Promise<void> | undefined;
    const gate = () => ready!;
    const db = new Kysely<MetadataDatabase>({ dialect: new BetterSqliteDialect(raw, { gate, file }) });
    const leases = leaseFile
      ? new Kysely<LeaseDatabase>({ dialect: new BetterSqliteDialect(leaseFile, { gate, file: leasePath }) })
      : (db as unknown as Kysely<LeaseDatabase>);
    super(db, sqliteDialect, leases);
    this.raw = raw;
    this.leaseFile = leaseFile;
    ready = this.prepareSchema(raw, leaseFile, file);
    // Nobody may have awaited it yet: an error surfaces on the first query (or open()), never as an unhandled rejection.
    ready.catch(() => {});
    this.ready = ready;
    // data_version changes when another connection (any process) commits;
    // total_changes() counts the rows this connection changed. Together they
    // change on every write that can be seen from here.
    this.dataVersion = raw.prepare<[], number>("PRAGMA data_version").pluck();
    this.totalChanges = raw.prepare<[], number>("SELECT total_changes()").pluck();
  }

  /** Opens the database and waits until its schema is current (start-up errors surface here). */
  static async open(path: string): Promise<SqliteMetaStore> {
    const store = new SqliteMetaStore(path);
    try {
      await store.ready;
    } catch (error) {
      await store.close().catch(() => {});
      throw error;
    }
    return store;
  }

  private async prepareSchema(raw: Database.Database, leaseFile: Database.Database | undefined, file: string | undefined): Promise<void> {
    // Migrations run on instances of their own (the store's wait for `ready`).
    const setup = new Kysely<MetadataDatabase>({ dialect: new BetterSqliteDialect(raw, { closeDatabase: false, file }) });
    await migrate(setup, sqliteDialect);
    if (leaseFile) {
      const leases = new Kysely<LeaseDatabase>({ dialect: new BetterSqliteDialect(leaseFile, { closeDatabase: false, file: file && `${file}.leases` }) });
      await createLeaseTable(leases, sqliteDialect);
    }
  }

  /**
   * Read once per event-loop turn, in the check phase (setImmediate), for
   * every request that asked during the turn: reading `PRAGMA data_version`
   * takes SQLite's WAL read lock (two fcntl calls), ~8% of a cached manifest
   * GET when every request read it (docs/benchmarks-history.md, round 6).
   *
   * Still exact: the token a caller gets is always read after it called, and
   * it called after its request arrived, so any write that completed before
   * the request arrived (in this process, another --workers process,
   * `ferry gc`) is in it. Nothing is reused across turns: a call made once
   * the read has started waits for the next one. (Reusing a token read
   * earlier in the turn would not be exact: libuv may poll again within one
   * poll phase, and timers run before it, so a request can arrive after a
   * token read in the same turn.) The cost is answering cached reads in the
   * check phase of the turn that received them instead of in the poll phase.
   */
  changeToken(): Promise<string> {
    return (this.nextToken ??= new Promise<string>((resolveToken, reject) => {
      setImmediate(() => {
        this.nextToken = null;
        try {
          resolveToken(`${this.dataVersion.get()!}.${this.totalChanges.get()!}`);
        } catch (error) {
          reject(error);
        }
      });
    }));
  }

  /** A local file: it answers unless it was closed or broken. */
  async ping(): Promise<boolean> {
    try {
      this.raw.prepare("SELECT 1").get();
      return true;
    } catch {
      return false;
    }
  }

  override async close(): Promise<void> {
    await this.ready.catch(() => {});
    await super.close();
    if (this.raw.open) this.raw.close();
    if (this.leaseFile?.open) this.leaseFile.close();
  }
}
