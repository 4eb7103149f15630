/**
 * Queries built once and compiled once per store, then executed with new
 * values: the hot paths (manifest and tag reads, pushes, upload sessions,
 * leases). Building a Kysely query costs ~30 µs of CPU, more than SQLite
 * takes to run it; a template pays that once.
 *
 * The builder receives `p(name)`, which stands for a value supplied at
 * execution; it compiles to an ordinary bound parameter, so the SQL text is
 * the same as a query built with the value itself.
 */
import type { CompiledQuery, Compilable, Kysely, QueryResult } from "kysely";

const MARK = "\u0000ferry-param:";

/** Stands for the value named `name` (typed `never`, so it fits wherever the builder expects a value). */
export type Param = (name: string) => never;

const param: Param = (name: string) => `${MARK}${name}` as never;

export class QueryTemplate<R, DB> {
  private compiled: CompiledQuery<R> | undefined;
  /** Per parameter position: the name of the value it takes, or undefined for a constant. */
  private slots: Array<string | undefined> = [];

  constructor(
    private readonly db: Kysely<DB>,
    private readonly build: (db: Kysely<DB>, p: Param) => Compilable<R>,
  ) {}

  private compile(): CompiledQuery<R> {
    if (!this.compiled) {
      const compiled = this.build(this.db, param).compile();
      this.slots = compiled.parameters.map((value) => (typeof value === "string" && value.startsWith(MARK) ? value.slice(MARK.length) : undefined));
      this.compiled = compiled;
    }
    return this.compiled;
  }

  /** Runs on `on` (the store's database or a transaction of it). */
  execute(on: Kysely<DB>, values: Record<string, unknown>): Promise<QueryResult<R>> {
    const compiled = this.compile();
    const parameters = compiled.parameters.map((constant, i) => {
      const name = this.slots[i];
      if (name === undefined) return constant;
      if (!(name in values)) throw new Error(`query template: no value for ${name}`);
      return values[name];
    });
    return on.executeQuery<R>({ ...compiled, parameters });
  }

  async rows(on: Kysely<DB>, values: Record<string, unknown>): Promise<R[]> {
    return (await this.execute(on, values)).rows;
  }

  async first(on: Kysely<DB>, values: Record<string, unknown>): Promise<R | undefined> {
    return (await this.execute(on, values)).rows[0];
  }

  async changes(on: Kysely<DB>, values: Record<string, unknown>): Promise<number> {
    return Number((await this.execute(on, values)).numAffectedRows ?? 0n);
  }
}
