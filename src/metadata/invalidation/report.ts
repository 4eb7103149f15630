/**
 * Whether cache invalidation is live, for operators: a `cacheInvalidation`
 * entry in /healthz's details, and metrics. Not live is not unhealthy (the
 * store then reads a change token from the database for every cached read,
 * which is always correct, only slower), so it never turns /healthz into 503.
 */
import { Counter, Gauge, type Registry } from "prom-client";
import type { ListenerStatus } from "./listener.js";

/** A store that may listen for change announcements (PostgresMetaStore). */
export interface InvalidationSource {
  invalidationStatus?(): ListenerStatus | undefined;
}

export interface InvalidationDetails {
  /** "live": tokens from memory, moved by announcements; "fallback": one database read per cached request. */
  mode: "live" | "fallback";
  since: string;
  reconnects: number;
  unconfirmedWrites: number;
}

function statusOf(store: object): ListenerStatus | undefined {
  return (store as InvalidationSource).invalidationStatus?.();
}

export function invalidationDetails(store: object): InvalidationDetails | undefined {
  const status = statusOf(store);
  if (!status) return undefined;
  return {
    mode: status.live ? "live" : "fallback",
    since: new Date(status.since).toISOString(),
    reconnects: status.reconnects,
    unconfirmedWrites: status.unconfirmedWrites,
  };
}

export function registerInvalidationMetrics(registry: Registry, store: object): void {
  if (!statusOf(store)) return;
  const status = () => statusOf(store)!;
  registry.registerMetric(
    new Gauge({
      name: "ferry_metadata_invalidation_live",
      help: "1 while this replica's LISTEN connection is live (cached reads need no database round trip), 0 while it falls back to a change token read per request",
      registers: [],
      collect() {
        this.set(status().live ? 1 : 0);
      },
    }),
  );
  const counter = (name: string, help: string, value: (s: ListenerStatus) => number) =>
    registry.registerMetric(
      new Counter({
        name,
        help,
        registers: [],
        collect() {
          this.reset();
          this.inc(value(status()));
        },
      }),
    );
  counter("ferry_metadata_invalidation_reconnects_total", "Times the LISTEN connection went live again after losing it (every cached entry is dropped then)", (s) => s.reconnects);
  counter("ferry_metadata_invalidation_received_total", "Change announcements received from any replica", (s) => s.received);
  counter(
    "ferry_metadata_invalidation_unconfirmed_writes_total",
    "Writes acknowledged without their own announcement back on this replica's listener within the bound (listener down or slower than the bound)",
    (s) => s.unconfirmedWrites,
  );
  counter(
    "ferry_metadata_invalidation_polled_changes_total",
    "Changes this replica found in the change log before (or without) their announcement: a writer that died between its commit and its NOTIFY, or a NOTIFY slower than the poll",
    (s) => s.polledChanges,
  );
}
