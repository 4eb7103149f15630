/**
 * Configuration of pull-through mirrors and scheduled syncs (docs/mirrors.md):
 *
 *   mirrors:
 *     - prefix: hub/
 *       upstream: https://registry-1.docker.io
 *       credentials: { username: …, password: … }
 *       tagTtl: 10m
 *       onUpstreamDown: serve-stale   # or fail
 *   sync:
 *     - from: hub/library/alpine
 *       tags: ["3.*"]
 *       interval: 1h
 */
import { z } from "zod";
import { duration } from "../config/types.js";

/** A repository-name prefix ending in "/" ("" = every repository: a registry that is only a mirror). */
const prefix = z
  .string()
  .regex(/^([a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*\/)*$/, 'write a repository path ending in "/", e.g. hub/ or mirrors/quay/ ("" mirrors every repository)');

/** scheme://host[:port], nothing else: repositories are named by the prefix. */
const upstream = z
  .string()
  .regex(/^https?:\/\/(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?\/?$/, "write the registry's base URL, e.g. https://registry-1.docker.io or http://127.0.0.1:5001 (no path)")
  .transform((value) => value.replace(/\/$/, ""));

export const mirrorConfigSchema = z.strictObject({
  prefix,
  upstream,
  /** For Basic and bearer-token challenges of the upstream; never sent to anyone else, never shown to clients. */
  credentials: z.strictObject({ username: z.string().min(1), password: z.string().min(1) }).optional(),
  /**
   * Deadline for each upstream answer read whole (manifests, tag lists, tokens), however slowly it trickles in:
   * past it the pull is answered 502 (or from the cache with serve-stale) instead of hanging every client of the tag.
   */
  upstreamTimeout: duration.refine((ms) => ms >= 100, "must be at least 100ms").default(30_000),
  /** How long a cached tag is trusted before the upstream is asked again (HEAD, digest compared). */
  tagTtl: duration.default(10 * 60_000),
  /** Upstream unreachable, failing or rate-limiting: serve cached tags with a Warning header, or answer 502/503. */
  onUpstreamDown: z.enum(["serve-stale", "fail"]).default("serve-stale"),
  /**
   * Values of containerd's `ns` query parameter routed to this mirror. Default: the upstream's host
   * (and docker.io for Docker Hub's registry-1.docker.io).
   */
  namespaces: z.array(z.string().min(1)).optional(),
  /** Cached tags no client pulled for this long are dropped (garbage collection then frees their blobs); unset: kept. */
  retention: duration.refine((ms) => ms >= 1000, "must be at least 1s").optional(),
  /**
   * Upstream blob fetches in progress at once for this mirror; more get 429 with Retry-After.
   * Each holds up to about 80 MiB of memory (what clients have not read and the store has not written).
   */
  maxConcurrentFetches: z.number().int().min(1).max(1_000).default(16),
});

export const syncConfigSchema = z.strictObject({
  /** A repository under a mirror prefix, e.g. hub/library/alpine. */
  from: z.string().min(1),
  /** Tag patterns (`*` any run of characters, `?` one); default every tag. */
  tags: z.array(z.string().min(1)).min(1).default(["*"]),
  interval: duration.refine((ms) => ms >= 1000, "must be at least 1s"),
});

export const mirrorsConfigSchema = z.array(mirrorConfigSchema).superRefine((mirrors, ctx) => {
  const seen = new Set<string>();
  mirrors.forEach((mirror, index) => {
    if (seen.has(mirror.prefix)) ctx.addIssue({ code: "custom", path: [index, "prefix"], message: `prefix "${mirror.prefix}" is used by two mirrors` });
    seen.add(mirror.prefix);
  });
});

export type MirrorConfig = z.output<typeof mirrorConfigSchema>;
export type SyncConfig = z.output<typeof syncConfigSchema>;
