/**
 * Change tokens per scope (a repository, the catalog), kept in memory and
 * moved by invalidations instead of read from the database: while the
 * replica's LISTEN connection is live, a token read costs no I/O.
 *
 * A token is `n<generation>.<counter>`. Dropping a scope moves its counter;
 * dropping everything starts a new generation (and forgets the counters, so
 * memory stays bounded by the scopes changed in one generation). The "n"
 * keeps these apart from WAL positions ("0/16B3748"), the fallback tokens, so
 * an entry cached under one kind is never served under the other.
 */
import { ALL_SCOPES } from "./changes.js";

/** Counters kept before the next drop of one more starts a new generation instead. */
const MAX_SCOPES = 50_000;

export class ScopedTokens {
  private generation = 0;
  /** Moves on every drop: the token of "any change" (no scope). */
  private any = 0;
  private readonly counters = new Map<string, number>();

  token(scope?: string): string {
    const counter = scope === undefined ? this.any : (this.counters.get(scope) ?? 0);
    return `n${this.generation}.${counter}`;
  }

  drop(scopes: readonly string[]): void {
    this.any++;
    for (const scope of scopes) {
      if (scope === ALL_SCOPES || this.counters.size >= MAX_SCOPES) return this.dropAll();
      this.counters.set(scope, (this.counters.get(scope) ?? 0) + 1);
    }
  }

  dropAll(): void {
    this.generation++;
    this.any++;
    this.counters.clear();
  }
}
