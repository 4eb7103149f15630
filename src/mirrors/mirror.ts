/**
 * One mirrored upstream: which local repositories it owns (its prefix), how
 * a local name maps to the upstream's, what is fresh, and what it did
 * (counters for /ferry/v1/mirrors and /metrics).
 */
import type { MirrorConfig } from "./config.js";
import { connectUpstream, type Upstream, type UpstreamHealthView } from "./upstream.js";
import type { BlobFlight } from "./blob-flight.js";
import type { ManifestOutcome } from "./service.js";

const DOCKER_HUB_HOSTS = new Set(["registry-1.docker.io", "docker.io", "index.docker.io"]);
/** Tags whose freshness a mirror remembers; the oldest checks are forgotten first (they are re-checked upstream). */
const MAX_FRESH_TAGS = 100_000;

export interface MirrorCounters {
  manifestHits: number;
  manifestMisses: number;
  /** Cached tags whose TTL had passed and that the upstream confirmed unchanged. */
  manifestRevalidated: number;
  /** Cached tags served while the upstream was down or rate-limiting (with a Warning). */
  staleServed: number;
  blobHits: number;
  blobMisses: number;
  /** Clients that joined a fetch already in progress instead of starting one. */
  blobFetchesJoined: number;
  bytesFromCache: number;
  bytesFetched: number;
  upstreamErrors: number;
}

export interface MirrorStatus {
  prefix: string;
  upstream: string;
  tagTtlSeconds: number;
  onUpstreamDown: MirrorConfig["onUpstreamDown"];
  namespaces: string[];
  counters: MirrorCounters;
  /** Of manifest and blob requests, the share answered without fetching from the upstream. */
  hitRate: number | null;
  fetchesInProgress: number;
  upstreamHealth: UpstreamHealthView;
}

export class Mirror {
  readonly prefix: string;
  readonly upstream: Upstream;
  readonly namespaces: string[];
  readonly counters: MirrorCounters = {
    manifestHits: 0,
    manifestMisses: 0,
    manifestRevalidated: 0,
    staleServed: 0,
    blobHits: 0,
    blobMisses: 0,
    blobFetchesJoined: 0,
    bytesFromCache: 0,
    bytesFetched: 0,
    upstreamErrors: 0,
  };
  /** Upstream blob fetches in progress, by local repository and digest (single flight). */
  readonly flights = new Map<string, Promise<BlobFlight | null>>();
  /** Manifest checks in progress, by local repository and reference (one upstream request for concurrent pulls). */
  readonly manifestChecks = new Map<string, Promise<ManifestOutcome>>();
  private readonly checkedTags = new Map<string, number>();
  private readonly dockerHub: boolean;

  constructor(
    readonly config: MirrorConfig,
    manifestMaxBytes?: number,
  ) {
    this.prefix = config.prefix;
    this.upstream = connectUpstream(config, manifestMaxBytes);
    const host = new URL(config.upstream).host;
    this.dockerHub = DOCKER_HUB_HOSTS.has(host);
    this.namespaces = config.namespaces ?? (this.dockerHub ? ["docker.io", host] : [host]);
  }

  owns(name: string): boolean {
    return name.startsWith(this.prefix) && name.length > this.prefix.length;
  }

  /** The upstream's name for a local repository under the prefix (Docker Hub's official images live under library/). */
  upstreamName(name: string): string {
    const rest = name.slice(this.prefix.length);
    return this.dockerHub && !rest.includes("/") ? `library/${rest}` : rest;
  }

  /** A cached tag is trusted without asking the upstream for tagTtl after the upstream last confirmed it. */
  isFresh(name: string, tag: string): boolean {
    const checked = this.checkedTags.get(`${name}:${tag}`);
    return checked !== undefined && Date.now() - checked < this.config.tagTtl;
  }

  markFresh(name: string, tag: string): void {
    const key = `${name}:${tag}`;
    this.checkedTags.delete(key);
    this.checkedTags.set(key, Date.now());
    if (this.checkedTags.size > MAX_FRESH_TAGS) this.checkedTags.delete(this.checkedTags.keys().next().value!);
  }

  status(): MirrorStatus {
    const c = this.counters;
    const requests = c.manifestHits + c.manifestMisses + c.manifestRevalidated + c.staleServed + c.blobHits + c.blobMisses;
    const served = c.manifestHits + c.manifestRevalidated + c.staleServed + c.blobHits;
    return {
      prefix: this.prefix,
      upstream: this.upstream.url,
      tagTtlSeconds: this.config.tagTtl / 1000,
      onUpstreamDown: this.config.onUpstreamDown,
      namespaces: this.namespaces,
      counters: { ...c },
      hitRate: requests === 0 ? null : Math.round((served / requests) * 1000) / 1000,
      fetchesInProgress: this.flights.size,
      upstreamHealth: this.upstream.health.view(),
    };
  }

  close(): void {
    this.upstream.close();
  }
}

/** Every configured mirror, and which one a repository name or `ns` value belongs to. */
export class MirrorSet {
  /** Longest prefix first, so hub/special/ wins over hub/ and "" comes last. */
  readonly mirrors: Mirror[];

  constructor(configs: readonly MirrorConfig[], manifestMaxBytes?: number) {
    this.mirrors = configs.map((config) => new Mirror(config, manifestMaxBytes)).sort((a, b) => b.prefix.length - a.prefix.length);
  }

  match(name: string): Mirror | null {
    for (const mirror of this.mirrors) if (mirror.owns(name)) return mirror;
    return null;
  }

  /** containerd's `?ns=docker.io`: the mirror that serves that upstream namespace. */
  forNamespace(ns: string): Mirror | null {
    const wanted = ns.toLowerCase();
    for (const mirror of this.mirrors) if (mirror.namespaces.some((n) => n.toLowerCase() === wanted)) return mirror;
    return null;
  }

  close(): void {
    for (const mirror of this.mirrors) mirror.close();
  }
}
