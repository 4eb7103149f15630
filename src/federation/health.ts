/**
 * Source health (FEDERATION.md §4.7): every attempt to reach a foreign layer
 * URL is recorded per URL host — last success and failure, what failed,
 * latency, counts — persisted in the metadata store when it supports it, and
 * consulted when choosing where to redirect.
 */
import type { Logger } from "pino";
import type { MetaStore, SourceHealthEvent, SourceHealthRecord } from "../metadata/meta-store.js";

/** A host whose last attempt failed less than this long ago is skipped when another URL is available. */
export const UNHEALTHY_FOR_MS = 60_000;

export class SourceHealth {
  private readonly records = new Map<string, SourceHealthRecord & { latencyTotal: number; latencyCount: number }>();

  constructor(
    private readonly meta: MetaStore,
    private readonly logger: Logger,
  ) {}

  /** Loads what earlier runs recorded so health survives a restart. */
  async load(): Promise<void> {
    for (const record of (await this.meta.listSourceHealth?.()) ?? []) {
      const count = record.averageLatencyMs === null ? 0 : 1;
      this.records.set(record.host, { ...record, latencyTotal: record.averageLatencyMs ?? 0, latencyCount: count });
    }
  }

  record(url: string, outcome: { ok: boolean; latencyMs: number | null; error: string | null }): void {
    const event: SourceHealthEvent = { host: hostOf(url), at: Date.now(), ...outcome };
    const current = this.records.get(event.host) ?? {
      host: event.host,
      successes: 0,
      failures: 0,
      lastSuccessAt: null,
      lastFailureAt: null,
      lastError: null,
      lastLatencyMs: null,
      averageLatencyMs: null,
      latencyTotal: 0,
      latencyCount: 0,
    };
    if (event.ok) {
      current.successes++;
      current.lastSuccessAt = event.at;
    } else {
      current.failures++;
      current.lastFailureAt = event.at;
      current.lastError = event.error;
    }
    if (event.latencyMs !== null) {
      current.lastLatencyMs = Math.round(event.latencyMs);
      current.latencyTotal += event.latencyMs;
      current.latencyCount++;
      current.averageLatencyMs = Math.round(current.latencyTotal / current.latencyCount);
    }
    this.records.set(event.host, current);
    this.meta.recordSourceHealth?.(event).catch((error: unknown) => {
      this.logger.warn({ err: error, host: event.host }, "could not persist foreign source health");
    });
  }

  /** False while the host's most recent attempt is a recent failure. */
  isHealthy(url: string, now = Date.now()): boolean {
    const record = this.records.get(hostOf(url));
    return record === undefined || isHealthyRecord(record, now);
  }

  async list(): Promise<Array<SourceHealthRecord & { healthy: boolean }>> {
    const stored = (await this.meta.listSourceHealth?.()) ?? [...this.records.values()].map(publicRecord);
    return stored.map((record) => ({ ...publicRecord(record), healthy: isHealthyRecord(record, Date.now()) }));
  }
}

function isHealthyRecord(record: SourceHealthRecord, now: number): boolean {
  if (record.lastFailureAt === null) return true;
  if (record.lastSuccessAt !== null && record.lastSuccessAt >= record.lastFailureAt) return true;
  return now - record.lastFailureAt > UNHEALTHY_FOR_MS;
}

function publicRecord(record: SourceHealthRecord): SourceHealthRecord {
  const { host, successes, failures, lastSuccessAt, lastFailureAt, lastError, lastLatencyMs, averageLatencyMs } = record;
  return { host, successes, failures, lastSuccessAt, lastFailureAt, lastError, lastLatencyMs, averageLatencyMs };
}

export function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url.slice(0, 100);
  }
}
