/**
 * GET /ferry/v1/mirrors (admin access only, like every /ferry/v1 admin
 * endpoint: upstream URLs, errors and traffic are operator facts): each
 * mirror's hit rate, bytes served from cache and fetched, upstream health,
 * and the scheduled syncs' latest runs. `ferry mirror status` prints it.
 */
import { Counter, Gauge, type Registry } from "prom-client";
import type { Extension } from "../http/app.js";
import { sendJson } from "../http/respond.js";
import type { MirrorService } from "./service.js";
import type { SyncStatus } from "./sync.js";

const ADMIN = [{ type: "admin" as const }];

export interface MirrorsAnswer {
  mirrors: ReturnType<MirrorService["set"]["mirrors"][number]["status"]>[];
  sync: SyncStatus[];
}

export function mirrorAdminExtensions(service: MirrorService, syncStatus: () => SyncStatus[]): Extension[] {
  return [
    {
      method: "GET",
      path: /^\/ferry\/v1\/mirrors$/,
      access: ADMIN,
      async handle(ctx) {
        const answer: MirrorsAnswer = { mirrors: service.set.mirrors.map((mirror) => mirror.status()), sync: syncStatus() };
        sendJson(ctx.res, 200, answer, { "Cache-Control": "no-store" });
      },
    },
  ];
}

/** Per-mirror counters on /metrics, labelled by prefix (bounded by the configuration). */
export function registerMirrorMetrics(registry: Registry, service: MirrorService): void {
  const counter = (name: string, help: string, value: (s: ReturnType<MirrorService["set"]["mirrors"][number]["status"]>) => number) =>
    new Counter({
      name,
      help,
      labelNames: ["mirror"],
      registers: [registry],
      collect() {
        this.reset();
        for (const mirror of service.set.mirrors) this.inc({ mirror: mirror.prefix }, value(mirror.status()));
      },
    });
  counter("ferry_mirror_manifest_hits_total", "Manifest requests answered from the mirror's cache (fresh or revalidated)", (s) => s.counters.manifestHits + s.counters.manifestRevalidated);
  counter("ferry_mirror_manifest_misses_total", "Manifest requests that fetched from the upstream", (s) => s.counters.manifestMisses);
  counter("ferry_mirror_stale_served_total", "Cached tags served while the upstream was unavailable", (s) => s.counters.staleServed);
  counter("ferry_mirror_blob_hits_total", "Blob requests answered from the mirror's cache", (s) => s.counters.blobHits);
  counter("ferry_mirror_blob_misses_total", "Blob fetches started from the upstream", (s) => s.counters.blobMisses);
  counter("ferry_mirror_blob_fetches_joined_total", "Blob requests that joined a fetch already in progress", (s) => s.counters.blobFetchesJoined);
  counter("ferry_mirror_bytes_from_cache_total", "Blob bytes served from the mirror's cache", (s) => s.counters.bytesFromCache);
  counter("ferry_mirror_bytes_fetched_total", "Blob bytes fetched from the upstream and stored", (s) => s.counters.bytesFetched);
  counter("ferry_mirror_upstream_errors_total", "Upstream requests that failed or were rate-limited", (s) => s.counters.upstreamErrors);
  new Gauge({
    name: "ferry_mirror_upstream_up",
    help: "1 when the mirror's last upstream request succeeded and no rate limit is in force",
    labelNames: ["mirror"],
    registers: [registry],
    collect() {
      this.reset();
      for (const mirror of service.set.mirrors) this.set({ mirror: mirror.prefix }, mirror.upstream.health.view().ok ? 1 : 0);
    },
  });
}
