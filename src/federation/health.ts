/**
 * Source health (docs/federation.md), per foreign layer URL: every attempt to
 * reach a URL (push verification, proxy fetches, `ferry foreign verify`, the
 * background re-check) is recorded — counts, the latest outcomes, last
 * success and failure, what failed, latency — in the metadata store, which
 * every process and replica shares. Refusals by the registry's own policy
 * (scheme, rules, the SSRF address check) say nothing about the source and
 * are not recorded.
 *
 * States (docs/federation.md, "Source health"), over the URL's counted attempts:
 * - unknown:  none yet;
 * - failing:  the latest FAILING_AFTER attempts all failed, or every attempt so
 *             far failed when there were fewer;
 * - degraded: not failing, but a failure among the latest SOURCE_HEALTH_WINDOW
 *             attempts, or the latest answer took SLOW_MS or more;
 * - healthy:  otherwise (the latest attempt succeeded, no recent failure, not slow).
 */
import type { Logger } from "pino";
import { SOURCE_HEALTH_WINDOW, type MetaStore, type RecheckRoundRecord, type SourceHealthEvent, type SourceHealthRecord } from "../metadata/meta-store.js";

export type SourceState = "unknown" | "healthy" | "degraded" | "failing";

export const SOURCE_STATES: readonly SourceState[] = ["unknown", "healthy", "degraded", "failing"];

/** Consecutive failures that make a URL failing. */
export const FAILING_AFTER = 3;
/** A latest time-to-headers at least this long makes a URL degraded. */
export const SLOW_MS = 5_000;
/** How stale this process's copy of the shared records may get before it reloads them. */
const REFRESH_MS = 5_000;

export interface AttemptOutcome {
  ok: boolean;
  latencyMs: number | null;
  error: string | null;
  /** The fetcher's failure kind, when the caller has it ("refused", "invalid", "denied" are policy refusals). */
  kind?: string;
}

/** A URL moved into or out of "failing" because of an attempt this process recorded. */
export interface SourceStateChange {
  url: string;
  host: string;
  from: SourceState;
  to: SourceState;
  /** The failure that made it failing (null on recovery). */
  error: string | null;
  consecutiveFailures: number;
}

/** A record as the admin API and the CLI show it. */
export interface SourceView extends SourceHealthRecord {
  state: SourceState;
  /** The latest counted attempt (epoch ms). */
  lastCheckedAt: number | null;
}

export interface SourceHealthOptions {
  slowMs?: number;
  refreshMs?: number;
}

export class SourceHealth {
  private records = new Map<string, SourceHealthRecord>();
  private readonly pending = new Set<Promise<void>>();
  private readonly slowMs: number;
  private readonly refreshMs: number;
  private loadedAt = 0;
  private loading: Promise<void> | null = null;
  /**
   * Told when an attempt recorded in this process moves a URL into or out of
   * "failing" (notifications' foreign-source-failed / -recovered events).
   */
  onStateChange: ((change: SourceStateChange) => void) | null = null;
  /** The re-check schedule, when one runs in this process's registry (shown by the admin API). */
  recheckSettings: { interval: number; method: string; concurrency: number; timeout: number } | null = null;

  constructor(
    private readonly meta: MetaStore,
    private readonly logger: Logger,
    options: SourceHealthOptions = {},
  ) {
    this.slowMs = options.slowMs ?? SLOW_MS;
    this.refreshMs = options.refreshMs ?? REFRESH_MS;
  }

  /** Reads the shared records (what every process recorded) into this process's copy. */
  load(): Promise<void> {
    if (!this.meta.listSourceHealth) return Promise.resolve();
    this.loading ??= (async () => {
      try {
        // Our own attempts first, so the reload cannot miss them.
        await this.flush();
        const records = await this.meta.listSourceHealth!();
        this.records = new Map(records.map((record) => [record.url, record]));
        this.loadedAt = Date.now();
      } finally {
        this.loading = null;
      }
    })();
    return this.loading;
  }

  record(url: string, outcome: AttemptOutcome): void {
    if (!outcome.ok && isPolicyRefusal(outcome)) {
      this.logger.debug({ url, reason: outcome.error }, "policy refusal: not counted as source health");
      return;
    }
    const event: SourceHealthEvent = { url, host: hostOf(url), at: Date.now(), ok: outcome.ok, latencyMs: outcome.latencyMs, error: outcome.ok ? null : outcome.error };
    const before = this.records.get(url);
    const after = applyEvent(before, event);
    this.records.set(url, after);
    this.reportChange(url, before, after, event);
    if (!this.meta.recordSourceHealth) return;
    const persisted = this.meta.recordSourceHealth(event).catch((error: unknown) => {
      this.logger.warn({ err: error, url }, "could not persist foreign source health");
    });
    this.pending.add(persisted);
    void persisted.finally(() => this.pending.delete(persisted));
  }

  private reportChange(url: string, before: SourceHealthRecord | undefined, after: SourceHealthRecord, event: SourceHealthEvent): void {
    if (!this.onStateChange) return;
    const from = sourceState(before, this.slowMs);
    const to = sourceState(after, this.slowMs);
    if (from === to || (from !== "failing" && to !== "failing")) return;
    try {
      this.onStateChange({ url, host: event.host, from, to, error: event.error, consecutiveFailures: after.consecutiveFailures });
    } catch (error) {
      this.logger.warn({ err: error, url }, "source state change listener failed");
    }
  }

  /** Waits until every attempt recorded so far is in the store. */
  async flush(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  state(url: string): SourceState {
    this.refreshIfStale();
    return sourceState(this.records.get(url), this.slowMs);
  }

  /** False only for failing URLs: routing tries every other URL first (redirect, proxy). */
  isHealthy(url: string): boolean {
    return this.state(url) !== "failing";
  }

  /** Every recorded URL, fresh from the shared store. */
  async list(): Promise<SourceView[]> {
    await this.load();
    return [...this.records.values()].sort((a, b) => (a.url < b.url ? -1 : a.url > b.url ? 1 : 0)).map((record) => this.view(record));
  }

  view(record: SourceHealthRecord): SourceView {
    return { ...record, state: sourceState(record, this.slowMs), lastCheckedAt: lastCheckedAt(record) };
  }

  /** What this process knows of one URL (a never-attempted URL as "unknown"). */
  viewOf(url: string): SourceView {
    return this.view(this.records.get(url) ?? emptyRecord(url));
  }

  /** The shared re-check claim row: when the last round ran, and who ran it. */
  async lastRecheckRound(): Promise<RecheckRoundRecord | null> {
    return (await this.meta.lastRecheckRound?.()) ?? null;
  }

  private refreshIfStale(): void {
    if (this.loading || Date.now() - this.loadedAt < this.refreshMs || !this.meta.listSourceHealth) return;
    this.load().catch((error: unknown) => this.logger.warn({ err: error }, "could not reload foreign source health"));
  }
}

/** The state of a URL from its record (see the module comment for the definitions). */
export function sourceState(record: SourceHealthRecord | undefined, slowMs = SLOW_MS): SourceState {
  if (!record || record.successes + record.failures === 0) return "unknown";
  const attempts = record.successes + record.failures;
  if (record.consecutiveFailures > 0 && record.consecutiveFailures >= Math.min(FAILING_AFTER, attempts)) return "failing";
  if (record.recent.slice(0, SOURCE_HEALTH_WINDOW).includes("0")) return "degraded";
  if (record.lastLatencyMs !== null && record.lastLatencyMs >= slowMs) return "degraded";
  return "healthy";
}

/**
 * True when the failure is the registry refusing the URL itself (URL syntax
 * or scheme, a policy rule, the SSRF address check), not the source failing.
 * Callers that have the fetcher's FetchError pass its kind; otherwise the
 * fetcher's and policy's refusal texts are recognised.
 */
export function isPolicyRefusal(outcome: Pick<AttemptOutcome, "error" | "kind">): boolean {
  // The URL was contacted and answered with a redirect the policy refuses:
  // that is how the source behaves, so it counts against the URL.
  if (/^redirected to /.test(outcome.error ?? "")) return false;
  if (outcome.kind === "refused" || outcome.kind === "invalid" || outcome.kind === "denied") return true;
  const error = outcome.error ?? "";
  return (
    /^refused to connect to /.test(error) || // fetcher: forbidden address (literal or resolved)
    /^URL /.test(error) || // fetcher: syntax or scheme
    /denied by federation rule|matches no federation rule/.test(error) // policy (also applied by the fetcher per hop)
  );
}

/** One attempt applied to a record, exactly as the store applies it. */
export function applyEvent(current: SourceHealthRecord | undefined, event: SourceHealthEvent): SourceHealthRecord {
  const record = current ? { ...current } : emptyRecord(event.url, event.host);
  const latency = event.latencyMs === null ? null : Math.round(event.latencyMs);
  const before = record.successes + record.failures;
  if (event.ok) {
    record.successes++;
    record.consecutiveFailures = 0;
    record.lastSuccessAt = Math.max(record.lastSuccessAt ?? 0, event.at);
  } else {
    record.failures++;
    record.consecutiveFailures++;
    record.lastFailureAt = Math.max(record.lastFailureAt ?? 0, event.at);
    record.lastError = event.error;
  }
  record.recent = `${event.ok ? "1" : "0"}${record.recent}`.slice(0, SOURCE_HEALTH_WINDOW);
  if (latency !== null) {
    record.lastLatencyMs = latency;
    // A running mean over earlier attempts (close enough until the next reload; the store keeps exact totals).
    record.averageLatencyMs = record.averageLatencyMs === null ? latency : Math.round((record.averageLatencyMs * before + latency) / (before + 1));
  }
  return record;
}

function emptyRecord(url: string, host = hostOf(url)): SourceHealthRecord {
  return {
    url,
    host,
    successes: 0,
    failures: 0,
    consecutiveFailures: 0,
    recent: "",
    lastSuccessAt: null,
    lastFailureAt: null,
    lastError: null,
    lastLatencyMs: null,
    averageLatencyMs: null,
  };
}

function lastCheckedAt(record: SourceHealthRecord): number | null {
  if (record.lastSuccessAt === null) return record.lastFailureAt;
  if (record.lastFailureAt === null) return record.lastSuccessAt;
  return Math.max(record.lastSuccessAt, record.lastFailureAt);
}

/** host[:port] as the URL writes it: the metrics label, bounded by the hosts the policy admits. */
export function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url.slice(0, 100);
  }
}
