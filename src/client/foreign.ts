/**
 * Foreign layers on the client side (docs/federation.md). Their `urls` are
 * fetched with NO credentials of any kind: a dedicated HTTP agent, no
 * Authorization header, redirects followed by hand (http/https only). The
 * caller verifies digest and size (VerifyingStream).
 */
import type { IncomingHttpHeaders } from "node:http";
import type { Readable } from "node:stream";
import { AgentPool, discard, readAll } from "./http.js";
import type { RegistryClient } from "./registry.js";
import { DOCKER_FOREIGN_LAYER, isNonDistributableMediaType } from "../oci/media-types.js";
import type { Descriptor } from "../oci/manifest.js";
import { SourceError, errorMessage } from "./errors.js";
import { VerifyingStream } from "./verify.js";

/** Its own connections: nothing of the registry's (credentials, sockets) is shared with foreign hosts. */
const foreignPool = new AgentPool({ maxSockets: 8, connectTimeoutMs: 10_000 });

export async function closeForeignConnections(): Promise<void> {
  foreignPool.destroy();
}

/** A layer the push side must not upload: its descriptor says where else it lives. */
export function isForeign(descriptor: Descriptor): boolean {
  return (descriptor.urls?.length ?? 0) > 0;
}

/** The distributable media type with the same content (for --include-foreign). */
export function distributableMediaType(mediaType: string): string {
  if (mediaType === DOCKER_FOREIGN_LAYER) return "application/vnd.docker.image.rootfs.diff.tar.gzip";
  if (isNonDistributableMediaType(mediaType)) return mediaType.replace(".nondistributable.", ".");
  return mediaType;
}

async function requestNoCredentials(url: string, method: "GET" | "HEAD"): Promise<{ status: number; headers: IncomingHttpHeaders; body: Readable }> {
  let current = new URL(url);
  for (let hop = 0; hop <= 5; hop++) {
    if (current.protocol !== "http:" && current.protocol !== "https:") {
      throw new SourceError(`${current.protocol} URLs are not fetched (only http and https)`);
    }
    const response = await foreignPool.send({
      method,
      url: current,
      headers: { "user-agent": "ferry-client/0.1", accept: "*/*" },
      idleTimeoutMs: 60_000,
    });
    const location = response.headers.location;
    if (response.status >= 300 && response.status < 400 && typeof location === "string") {
      await discard(response.body);
      current = new URL(location, current);
      continue;
    }
    return response;
  }
  throw new SourceError("too many redirects");
}

/** Opens one foreign URL for reading; throws SourceError naming the failure. */
export async function openForeignUrl(url: string): Promise<Readable> {
  let response;
  try {
    response = await requestNoCredentials(url, "GET");
  } catch (error) {
    throw error instanceof SourceError ? error : new SourceError(errorMessage(error), { cause: error });
  }
  if (response.status !== 200) {
    await discard(response.body);
    throw new SourceError(`HTTP ${response.status}`);
  }
  return response.body;
}

export interface UrlCheck {
  url: string;
  ok: boolean;
  status?: number;
  size?: number;
  /** Present with --verify: the digest of what was served. */
  digest?: string;
  error?: string;
}

/** HEAD (and with `verify`, GET and hash) one foreign URL of a layer. */
export async function checkForeignUrl(descriptor: Descriptor, url: string, verify: boolean): Promise<UrlCheck> {
  try {
    if (verify) {
      const body = await openForeignUrl(url);
      const verifier = new VerifyingStream(descriptor.digest, descriptor.size);
      body.on("error", (error) => verifier.destroy(error));
      body.pipe(verifier);
      for await (const _chunk of verifier) {
        // drain: the verifier checks size and digest at the end
      }
      return { url, ok: true, status: 200, size: descriptor.size, digest: descriptor.digest };
    }
    const response = await requestNoCredentials(url, "HEAD");
    await discard(response.body);
    const length = response.headers["content-length"];
    const size = typeof length === "string" ? Number(length) : undefined;
    if (response.status !== 200) return { url, ok: false, status: response.status, error: `HTTP ${response.status}` };
    if (size !== undefined && size !== descriptor.size) {
      return { url, ok: false, status: 200, size, error: `size mismatch: expected ${descriptor.size} bytes, the server says ${size}` };
    }
    return { url, ok: true, status: 200, ...(size === undefined ? {} : { size }) };
  } catch (error) {
    return { url, ok: false, error: errorMessage(error) };
  }
}

/** Health of one foreign layer URL as the registry's admin API reports it (GET /ferry/v1/foreign/sources). */
export interface ForeignSourceRow {
  url: string;
  host: string;
  state: "unknown" | "healthy" | "degraded" | "failing";
  successes: number;
  failures: number;
  consecutiveFailures: number;
  recent: string;
  lastSuccessAt: number | null;
  lastFailureAt: number | null;
  lastCheckedAt: number | null;
  lastError: string | null;
  lastLatencyMs: number | null;
  averageLatencyMs: number | null;
  referenced: boolean;
  /** Not failing (what routing prefers). */
  healthy: boolean;
  policy: { allowed: boolean; rule: string; reason?: string };
}

export interface ForeignSourcesAnswer {
  sources: ForeignSourceRow[];
  recheck: {
    interval: number;
    method?: string;
    concurrency?: number;
    timeout?: number;
    lastRound: { startedAt: number; finishedAt: number | null; checked: number } | null;
  };
}

export interface ForeignLayerRow {
  repository: string;
  digest: string;
  size: number;
  urls: string[];
  verification: string;
  verifiedAt: number | null;
  cached: boolean;
  manifests: string[];
  policy: Array<{ url: string; allowed: boolean; serve?: string; rule: string; reason?: string }>;
}

export interface ForeignLayersAnswer {
  layers: ForeignLayerRow[];
  cache: { entries: number; bytes: number; maxBytes: number };
}

export interface ForeignVerifyAnswer {
  repository: string;
  manifest: string;
  mode: string;
  ok: boolean;
  layers: Array<{ digest: string; size: number; urls: string[]; verified: boolean; attempts: Array<{ url: string; ok: boolean; answer: string }> }>;
}

/** What to ask about: a whole registry, one repository, or one image. */
export interface ForeignScope {
  repository?: string;
  /** Tag or digest; needs `repository`. */
  reference?: string;
}

/**
 * Ferry's federation admin API (/ferry/v1/foreign/*) over a RegistryClient's
 * transport, so it authenticates exactly like every other command: stored
 * credentials from `ferry login`, Basic or a Bearer token from the realm.
 */
export class ForeignAdminClient {
  constructor(private readonly client: RegistryClient) {}

  sources(scope: ForeignScope = {}): Promise<ForeignSourcesAnswer> {
    return this.call("GET", "/ferry/v1/foreign/sources", scope);
  }

  layers(scope: ForeignScope = {}): Promise<ForeignLayersAnswer> {
    return this.call("GET", "/ferry/v1/foreign/layers", scope);
  }

  verify(repository: string, reference: string, mode?: string): Promise<ForeignVerifyAnswer> {
    return this.call("POST", "/ferry/v1/foreign/verify", { repository, reference }, mode ? { mode } : {});
  }

  private async call<T>(method: "GET" | "POST", path: string, scope: ForeignScope, extra: Record<string, string> = {}): Promise<T> {
    const query = new URLSearchParams();
    if (scope.repository) query.set("repository", scope.repository);
    if (scope.reference) query.set("reference", scope.reference);
    for (const [key, value] of Object.entries(extra)) query.set(key, value);
    const target = query.size > 0 ? `${path}?${query}` : path;
    const transport = this.client.transport;
    const response = await transport.send({ method, path: target, headers: { accept: "application/json" } });
    if (response.status !== 200) await transport.fail(response, `${method} ${transport.baseUrl}${path}`);
    const text = (await readAll(response.body)).toString("utf8");
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new Error(`${transport.baseUrl}${path} answered something that is not JSON (is this a Ferry registry?)`);
    }
  }
}
