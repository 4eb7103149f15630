/**
 * What differs between SQLite and PostgreSQL, in one place. Every query and
 * the schema are written once with Kysely (store.ts, migrations.ts); they ask
 * this adapter only for the few things the two dialects spell differently.
 */
import { sql, type ColumnDataType, type Expression, type Kysely, type QueryExecutorProvider, type RawBuilder, type Transaction } from "kysely";

/** A column type as Kysely's schema builder takes it. */
export type DataTypeExpression = ColumnDataType | Expression<unknown>;

export type DialectName = "sqlite" | "postgres";

export interface SqlDialect {
  readonly name: DialectName;
  /** Column types. */
  readonly types: {
    /** An auto-assigned integer primary key (repositories.id). */
    serial: ColumnDataType;
    /** The same for tables whose rows come and go fast (failed logins, the change log): a 32-bit sequence could run out. */
    serial64: ColumnDataType;
    /** Epoch milliseconds and byte counts (int8 in PostgreSQL). */
    int64: ColumnDataType;
    /** Text compared and sorted byte by byte (OCI listings are in lexical order, "B" before "a"). */
    text: DataTypeExpression;
    bytes: ColumnDataType;
  };
  /** SQLite: key-only tables are WITHOUT ROWID (half the pages, one B-tree per table). */
  readonly withoutRowid: boolean;
  /**
   * PostgreSQL runs transactions side by side on a pool of connections, so the
   * reference checks take row locks (FOR SHARE / FOR UPDATE); SQLite's write
   * transactions are serialised by BEGIN IMMEDIATE and need none.
   */
  readonly rowLocks: boolean;
  /** The JSON array (as text) of `value` over the group; NULL or "[]" for none. */
  jsonArray(value: Expression<string>): RawBuilder<string | null>;
  /** Whether `haystack` contains `needle` literally (no LIKE wildcards). */
  contains(haystack: Expression<string>, needle: string): RawBuilder<boolean>;
  /** The larger of two values (either may be NULL: then the other). */
  greatest(a: Expression<unknown>, b: Expression<unknown>): RawBuilder<number | null>;
  /**
   * The clock leases expire by, in epoch ms: the database's own in
   * PostgreSQL (replicas' clocks differ), this machine's (`jsNow`, a bound value) for SQLite.
   */
  nowMs(jsNow: unknown): RawBuilder<number>;
  /** Runs `work` in a transaction that no other process runs a migration beside. */
  exclusive<T, DB>(db: Kysely<DB>, work: (trx: Transaction<DB>) => Promise<T>): Promise<T>;
  /** After rows were inserted with explicit ids (ferry migrate): new rows must get ids above them. */
  afterIdsCopied(db: QueryExecutorProvider, table: string, column: string): Promise<void>;
  tableExists(db: QueryExecutorProvider, table: string): Promise<boolean>;
  columnExists(db: QueryExecutorProvider, table: string, column: string): Promise<boolean>;
}

export const sqliteDialect: SqlDialect = {
  name: "sqlite",
  types: { serial: "integer", serial64: "integer", int64: "integer", text: "text", bytes: "blob" },
  withoutRowid: true,
  rowLocks: false,
  jsonArray: (value) => sql<string | null>`json_group_array(${value})`,
  contains: (haystack, needle) => sql<boolean>`instr(${haystack}, ${needle}) > 0`,
  greatest: (a, b) => sql<number | null>`coalesce(max(${a}, ${b}), ${a}, ${b})`,
  nowMs: (jsNow) => sql<number>`${jsNow}`,
  // The transaction is BEGIN IMMEDIATE (sqlite.ts): it holds the database's write lock throughout.
  exclusive: (db, work) => db.transaction().execute(work),
  // INTEGER PRIMARY KEY takes max(id) + 1 by itself.
  afterIdsCopied: async () => {},
  tableExists: async (db, table) =>
    (await sql`select 1 as present from sqlite_master where type = 'table' and name = ${table}`.execute(db)).rows.length > 0,
  columnExists: async (db, table, column) =>
    (await sql`select 1 as present from pragma_table_info(${table}) where name = ${column}`.execute(db)).rows.length > 0,
};

/** pg_advisory_xact_lock key of schema migrations ("ferry" + 1). */
const MIGRATION_LOCK = 0x66657272_79000001n;

export const postgresDialect: SqlDialect = {
  name: "postgres",
  types: { serial: "serial", serial64: "bigserial", int64: "bigint", text: sql`text collate "C"`, bytes: "bytea" },
  withoutRowid: false,
  rowLocks: true,
  jsonArray: (value) => sql<string | null>`json_agg(${value})::text`,
  contains: (haystack, needle) => sql<boolean>`strpos(${haystack}, ${needle}) > 0`,
  greatest: (a, b) => sql<number | null>`greatest(${a}, ${b})`,
  nowMs: () => sql<number>`(extract(epoch from clock_timestamp()) * 1000)::int8`,
  // DDL is transactional in PostgreSQL: the whole migration commits or none of it;
  // a replica starting meanwhile waits on the lock and then finds the schema current.
  exclusive: (db, work) =>
    db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(${MIGRATION_LOCK.toString()}::int8)`.execute(trx);
      return work(trx);
    }),
  afterIdsCopied: async (db, table, column) => {
    await sql`select setval(pg_get_serial_sequence(${table}, ${column}), coalesce(max(${sql.ref(column)}), 0) + 1, false) from ${sql.table(table)}`.execute(db);
  },
  tableExists: async (db, table) =>
    (await sql<{ present: string | null }>`select to_regclass(${table})::text as present`.execute(db)).rows[0]?.present != null,
  columnExists: async (db, table, column) =>
    (
      await sql`select 1 as present from information_schema.columns
                where table_schema = current_schema() and table_name = ${table} and column_name = ${column}`.execute(db)
    ).rows.length > 0,
};
