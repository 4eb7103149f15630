/**
 * Foreign source health as Prometheus metrics, read from the shared records
 * in the metadata store at scrape time: every process exposes the same
 * numbers whichever of them recorded the attempts or ran the re-check.
 * Labelled by URL host only (`url_host`), so series stay bounded by the hosts
 * the policy admits; per-URL detail is in /ferry/v1/foreign/sources and
 * `ferry foreign status`. Beyond MAX_HOSTS hosts the rest share one series,
 * `url_host="_other"`.
 */
import { Counter, Gauge, type Registry } from "prom-client";
import type { MetaStore, RecheckRoundRecord, SourceHealthRecord } from "../metadata/meta-store.js";
import { SLOW_MS, SOURCE_STATES, sourceState, type SourceState } from "./health.js";

export const MAX_HOSTS = 200;
const OTHER = "_other";
/** The collect() calls of one scrape (started together) share one read of the store. */
const SNAPSHOT_MS = 100;

interface HostSummary {
  up: number;
  lastCheck: number;
  failures: number;
  attempts: number;
  states: Record<SourceState, number>;
}

interface Snapshot {
  hosts: Map<string, HostSummary>;
  round: RecheckRoundRecord | null;
}

export function registerSourceMetrics(registry: Registry, meta: MetaStore, slowMs = SLOW_MS): void {
  let cached: { at: number; snapshot: Promise<Snapshot> } | null = null;
  const snapshot = (): Promise<Snapshot> => {
    const now = Date.now();
    if (!cached || now - cached.at > SNAPSHOT_MS) {
      cached = { at: now, snapshot: read(meta, slowMs) };
      cached.snapshot.catch(() => (cached = null));
    }
    return cached.snapshot;
  };

  new Gauge({
    name: "ferry_foreign_source_up",
    help: "1 when no checked foreign layer URL on this host is failing, 0 when at least one is (hosts with checked URLs only)",
    labelNames: ["url_host"],
    registers: [registry],
    async collect() {
      this.reset();
      for (const [host, summary] of (await snapshot()).hosts) if (summary.attempts > 0) this.set({ url_host: host }, summary.up);
    },
  });
  new Gauge({
    name: "ferry_foreign_source_urls",
    help: "Foreign layer URLs on this host by health state (unknown, healthy, degraded, failing)",
    labelNames: ["url_host", "state"],
    registers: [registry],
    async collect() {
      this.reset();
      for (const [host, summary] of (await snapshot()).hosts) {
        for (const state of SOURCE_STATES) this.set({ url_host: host, state }, summary.states[state]);
      }
    },
  });
  new Gauge({
    name: "ferry_foreign_source_last_check_timestamp_seconds",
    help: "When a URL on this host was last attempted (Unix time)",
    labelNames: ["url_host"],
    registers: [registry],
    async collect() {
      this.reset();
      for (const [host, summary] of (await snapshot()).hosts) if (summary.lastCheck > 0) this.set({ url_host: host }, summary.lastCheck / 1000);
    },
  });
  new Counter({
    name: "ferry_foreign_source_failures_total",
    help: "Failed attempts to reach foreign layer URLs on this host (policy refusals are not counted)",
    labelNames: ["url_host"],
    registers: [registry],
    async collect() {
      this.reset();
      for (const [host, summary] of (await snapshot()).hosts) this.inc({ url_host: host }, summary.failures);
    },
  });
  new Counter({
    name: "ferry_foreign_source_attempts_total",
    help: "Attempts to reach foreign layer URLs on this host",
    labelNames: ["url_host"],
    registers: [registry],
    async collect() {
      this.reset();
      for (const [host, summary] of (await snapshot()).hosts) this.inc({ url_host: host }, summary.attempts);
    },
  });
  new Gauge({
    name: "ferry_foreign_recheck_last_round_timestamp_seconds",
    help: "When the last background re-check round of foreign sources finished (Unix time; absent before the first)",
    registers: [registry],
    async collect() {
      this.reset();
      const round = (await snapshot()).round;
      if (round?.finishedAt) this.set(round.finishedAt / 1000);
    },
  });
}

async function read(meta: MetaStore, slowMs: number): Promise<Snapshot> {
  const [records, round] = await Promise.all([meta.listSourceHealth?.() ?? [], meta.lastRecheckRound?.() ?? null]);
  return { hosts: summarize(records, slowMs), round };
}

export function summarize(records: SourceHealthRecord[], slowMs = SLOW_MS): Map<string, HostSummary> {
  const hosts = new Map<string, HostSummary>();
  for (const record of records) {
    const label = hosts.has(record.host) || hosts.size < MAX_HOSTS ? record.host : OTHER;
    const summary = hosts.get(label) ?? { up: 1, lastCheck: 0, failures: 0, attempts: 0, states: { unknown: 0, healthy: 0, degraded: 0, failing: 0 } };
    const state = sourceState(record, slowMs);
    summary.states[state]++;
    if (state === "failing") summary.up = 0;
    summary.failures += record.failures;
    summary.attempts += record.successes + record.failures;
    summary.lastCheck = Math.max(summary.lastCheck, record.lastSuccessAt ?? 0, record.lastFailureAt ?? 0);
    hosts.set(label, summary);
  }
  return hosts;
}
