/**
 * Kysely over one better-sqlite3 connection, tuned for the registry:
 *
 * - Statements are prepared once per SQL text and reused (Kysely's own
 *   SQLite driver prepares every query again: a parse per query).
 * - Transactions are BEGIN IMMEDIATE: several worker processes share the
 *   file, and a deferred transaction that reads and then writes gets
 *   SQLITE_BUSY at once when another process wrote meanwhile, without
 *   waiting (busy_timeout only covers taking the lock at BEGIN).
 * - One connection, handed out under a mutex: a transaction holds it from
 *   BEGIN to COMMIT, so concurrent async callers queue behind it and can
 *   never interleave their statements inside it.
 *   The mutex is per database FILE and shared by every connection this
 *   process opened on it: SQLite's lock is taken synchronously (busy_timeout
 *   sleeps on the event loop), so a second connection in the same process
 *   beginning a write while the first's transaction awaits between
 *   statements would wait for a lock that cannot be released until it
 *   gives up. Across processes, SQLite's own locking applies.
 * - `gate`: queries wait until it resolves (the driver's migrations run
 *   first, on their own Kysely instance over the same connection).
 */
import type Database from "better-sqlite3";
import {
  CompiledQuery,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
  type DatabaseConnection,
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver,
  type Kysely,
  type QueryCompiler,
  type QueryResult,
} from "kysely";

/** Distinct SQL texts kept prepared (IN lists of varying length make more than the fixed queries). */
const STATEMENT_CACHE = 1000;

class Connection implements DatabaseConnection {
  private readonly statements = new Map<string, Database.Statement>();

  constructor(private readonly db: Database.Database) {}

  private statement(text: string): Database.Statement {
    let statement = this.statements.get(text);
    if (!statement) {
      if (this.statements.size >= STATEMENT_CACHE) this.statements.clear();
      statement = this.db.prepare(text);
      this.statements.set(text, statement);
    }
    return statement;
  }

  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    const statement = this.statement(compiled.sql);
    const parameters = compiled.parameters as unknown[];
    if (statement.reader) return { rows: statement.all(parameters) as R[] };
    const { changes } = statement.run(parameters);
    return { numAffectedRows: BigInt(changes), rows: [] };
  }

  // eslint-disable-next-line require-yield
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error("streaming is not used with SQLite");
  }
}

class Mutex {
  private tail: Promise<void> = Promise.resolve();

  /** Resolves with the release function once every earlier holder released. */
  lock(): Promise<() => void> {
    let release!: () => void;
    const next = new Promise<void>((resolve) => (release = resolve));
    const acquired = this.tail.then(() => release);
    this.tail = this.tail.then(() => next);
    return acquired;
  }
}

/** One mutex per database file in this process (see above). */
const fileMutexes = new Map<string, Mutex>();

function mutexFor(file: string | undefined): Mutex {
  if (file === undefined) return new Mutex();
  let mutex = fileMutexes.get(file);
  if (!mutex) fileMutexes.set(file, (mutex = new Mutex()));
  return mutex;
}

class BetterSqliteDriver implements Driver {
  private readonly connection: Connection;
  private readonly mutex: Mutex;
  private readonly releases: Array<() => void> = [];

  constructor(
    private readonly db: Database.Database,
    private readonly gate: () => Promise<void>,
    private readonly closeDatabase: boolean,
    file: string | undefined,
  ) {
    this.connection = new Connection(db);
    this.mutex = mutexFor(file);
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    await this.gate();
    this.releases.push(await this.mutex.lock());
    return this.connection;
  }

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw("begin immediate"));
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw("commit"));
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    // A failed COMMIT or an error SQLite already rolled back for leaves no transaction open.
    if (this.db.inTransaction) await connection.executeQuery(CompiledQuery.raw("rollback"));
  }

  async releaseConnection(): Promise<void> {
    this.releases.shift()?.();
  }

  async destroy(): Promise<void> {
    if (this.closeDatabase && this.db.open) this.db.close();
  }
}

/** A Kysely dialect over an open better-sqlite3 database. */
export class BetterSqliteDialect implements Dialect {
  constructor(
    private readonly db: Database.Database,
    private readonly options: {
      gate?: () => Promise<void>;
      closeDatabase?: boolean;
      /** The database file's absolute path: connections to one file share a mutex. None for ":memory:". */
      file?: string;
    } = {},
  ) {}

  createDriver(): Driver {
    return new BetterSqliteDriver(this.db, this.options.gate ?? (async () => {}), this.options.closeDatabase ?? true, this.options.file);
  }

  createQueryCompiler(): QueryCompiler {
    return new SqliteQueryCompiler();
  }

  createAdapter(): DialectAdapter {
    return new SqliteAdapter();
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return new SqliteIntrospector(db);
  }
}
