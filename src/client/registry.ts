/**
 * The distribution-spec operations a client needs, over a Transport:
 * manifests (bytes kept exactly as served), blobs (streamed), uploads
 * (monolithic for small blobs, chunked with resume for large ones), mounts,
 * tags and catalog with Link pagination, deletes.
 */
import type { Readable } from "node:stream";
import { digestOf, parseDigest } from "../oci/digest.js";
import { DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, normalizeContentType } from "../oci/media-types.js";
import { ClientError, SourceError, errorMessage, isTransient } from "./errors.js";
import { discard, readAll } from "./http.js";
import { Transport, header, sleep, type Response, type TransportOptions } from "./transport.js";
import { VerifyingStream } from "./verify.js";
import type { Descriptor } from "../oci/manifest.js";

export const MANIFEST_ACCEPT = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST].join(", ");

/** Chunk size of a chunked (resumable) upload. */
export const DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024;
/** Blobs up to this size are read into memory and sent in one retryable PUT. */
export const SMALL_BLOB = 1024 * 1024;
/**
 * Above this size a blob goes up in resumable chunks even on the first try:
 * losing a monolithic PUT late would mean sending gigabytes again.
 */
export const MONOLITHIC_LIMIT = 2 * 1024 * 1024 * 1024;

export interface ManifestData {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

export interface UploadOptions {
  /** Upload in PATCH chunks of this size (resumable) instead of one streamed PUT. */
  chunkSize?: number;
  /** Upload in resumable chunks of DEFAULT_CHUNK_SIZE (used when a streamed PUT already failed). */
  resumable?: boolean;
  /** Called with the number of bytes acknowledged by the registry so far. */
  onProgress?: (bytes: number) => void;
  /** An upload session to use instead of starting one (e.g. from a failed mount). */
  location?: string;
  /** Times one chunk is resumed after an interruption (default 3). */
  resumeAttempts?: number;
}

export class RegistryClient {
  readonly transport: Transport;

  constructor(options: TransportOptions | Transport) {
    this.transport = options instanceof Transport ? options : new Transport(options);
  }

  get registry(): string {
    return this.transport.registry;
  }

  /** GET /v2/: proves the registry speaks the API and that our credentials are accepted. */
  async ping(): Promise<void> {
    const response = await this.transport.send({ method: "GET", path: "/v2/" });
    if (response.status !== 200) await this.transport.fail(response, `GET ${this.transport.baseUrl}/v2/`);
    await discard(response.body);
  }

  /**
   * GET /v2/ before a push: the host must answer like an OCI registry (200
   * with the API version header or a JSON body; a refusal is an auth error),
   * so nothing is pushed to a web server that happens to accept PUTs.
   */
  async checkRegistry(): Promise<void> {
    const response = await this.transport.send({ method: "GET", path: "/v2/" });
    if (response.status === 401 || response.status === 403) await this.transport.fail(response, `GET ${this.transport.baseUrl}/v2/`);
    const body = await readAll(response.body).catch(() => Buffer.alloc(0));
    const apiVersion = header(response.headers, "docker-distribution-api-version");
    let json = false;
    try {
      JSON.parse(body.toString("utf8"));
      json = true;
    } catch {
      json = false;
    }
    if (response.status === 200 && (apiVersion !== undefined || json)) return;
    const type = header(response.headers, "content-type");
    throw new ClientError(
      `${this.registry} does not look like an OCI registry: GET ${this.transport.baseUrl}/v2/ answered HTTP ${response.status}${type ? ` (${type.split(";")[0]})` : ""}; check the host and port`,
    );
  }

  async getManifest(repository: string, reference: string): Promise<ManifestData> {
    const path = `/v2/${repository}/manifests/${reference}`;
    const response = await this.transport.send({ method: "GET", path, headers: { accept: MANIFEST_ACCEPT }, scopes: [pull(repository)] });
    if (response.status !== 200) await this.transport.fail(response, `GET ${this.registry}${path}`);
    const bytes = await readAll(response.body);
    const mediaType = normalizeContentType(header(response.headers, "content-type")) ?? mediaTypeFromBody(bytes);
    const algorithm = reference.includes(":") ? parseDigest(reference).algorithm : "sha256";
    const digest = digestOf(bytes, algorithm);
    // A manifest fetched by digest must hash to it (distribution-spec "Pulling manifests").
    if (reference.includes(":") && digest !== reference) {
      throw new ClientError(`${this.registry}/${repository}@${reference}: the registry sent a manifest whose digest is ${digest}`);
    }
    return { bytes, mediaType, digest };
  }

  /** HEAD a manifest: its digest, media type and size, or undefined when unknown. */
  async headManifest(repository: string, reference: string): Promise<{ digest: string; mediaType: string; size: number } | undefined> {
    const path = `/v2/${repository}/manifests/${reference}`;
    const response = await this.transport.send({ method: "HEAD", path, headers: { accept: MANIFEST_ACCEPT }, scopes: [pull(repository)] });
    await discard(response.body);
    if (response.status === 404) return undefined;
    if (response.status !== 200) await this.transport.fail(response, `HEAD ${this.registry}${path}`);
    const digest = header(response.headers, "docker-content-digest");
    if (!digest) return undefined;
    return {
      digest,
      mediaType: normalizeContentType(header(response.headers, "content-type")) ?? "",
      size: Number(header(response.headers, "content-length") ?? 0),
    };
  }

  async putManifest(repository: string, reference: string, manifest: ManifestData): Promise<string> {
    const path = `/v2/${repository}/manifests/${reference}`;
    const response = await this.transport.send({
      method: "PUT",
      path,
      headers: { "content-type": manifest.mediaType },
      body: manifest.bytes,
      scopes: [pushPull(repository)],
    });
    if (response.status !== 201 && response.status !== 200 && response.status !== 202) {
      await this.transport.fail(response, `PUT ${this.registry}${path}`);
    }
    await discard(response.body);
    const digest = header(response.headers, "docker-content-digest");
    if (digest && digest !== manifest.digest) {
      throw new ClientError(`${this.registry}/${repository}: the registry stored the manifest under ${digest}, not ${manifest.digest}`);
    }
    return manifest.digest;
  }

  /**
   * Deletes one tag, leaving the manifest and its other tags (DELETE
   * /v2/<name>/manifests/<tag>, distribution-spec 1.1). Registries that only
   * delete by digest (distribution 2.8) answer 400/405; that is reported as
   * unsupported, never turned into a manifest delete.
   */
  async deleteTag(repository: string, tag: string): Promise<void> {
    const path = `/v2/${repository}/manifests/${tag}`;
    const response = await this.transport.send({ method: "DELETE", path, scopes: [`repository:${repository}:delete`, pushPull(repository)] });
    if (response.status === 202 || response.status === 200) {
      await discard(response.body);
      return;
    }
    if (response.status === 405 || response.status === 400) {
      const text = (await readAll(response.body).catch(() => Buffer.alloc(0))).toString("utf8");
      throw new ClientError(
        `${this.registry} does not support deleting a tag alone (HTTP ${response.status}${text.includes("UNSUPPORTED") ? " UNSUPPORTED" : ""}); \`ferry rm\` deletes the manifest with all its tags`,
        { status: response.status },
      );
    }
    await this.transport.fail(response, `DELETE ${this.registry}${path}`);
  }

  /**
   * The OCI 1.1 referrers of a manifest (signatures, SBOMs, attestations): the
   * referrers API, or the tag schema fallback (`<alg>-<hex>` tag) where the
   * registry has no such API.
   */
  async referrers(repository: string, digest: string, artifactType?: string): Promise<{ manifests: Descriptor[]; via: "api" | "tag" }> {
    const query = artifactType ? `?artifactType=${encodeURIComponent(artifactType)}` : "";
    const path = `/v2/${repository}/referrers/${digest}${query}`;
    const response = await this.transport.send({ method: "GET", path, headers: { accept: OCI_INDEX }, scopes: [pull(repository)] });
    if (response.status === 200) {
      const body = JSON.parse((await readAll(response.body)).toString("utf8")) as { manifests?: Descriptor[] };
      const manifests = Array.isArray(body.manifests) ? body.manifests : [];
      // A registry that ignores the filter says so with OCI-Filters-Applied missing; filter here then.
      const filtered = artifactType && !header(response.headers, "oci-filters-applied")?.includes("artifactType") ? manifests.filter((m) => m.artifactType === artifactType) : manifests;
      return { manifests: filtered, via: "api" };
    }
    if (response.status !== 404) await this.transport.fail(response, `GET ${this.registry}${path}`);
    await discard(response.body);
    const { algorithm, encoded } = parseDigest(digest);
    let index: ManifestData;
    try {
      index = await this.getManifest(repository, `${algorithm}-${encoded}`);
    } catch (error) {
      if (error instanceof ClientError && error.status === 404) return { manifests: [], via: "tag" };
      throw error;
    }
    const body = JSON.parse(index.bytes.toString("utf8")) as { manifests?: Descriptor[] };
    const manifests = Array.isArray(body.manifests) ? body.manifests : [];
    return { manifests: artifactType ? manifests.filter((m) => m.artifactType === artifactType) : manifests, via: "tag" };
  }

  async deleteManifest(repository: string, digest: string): Promise<void> {
    const path = `/v2/${repository}/manifests/${digest}`;
    const response = await this.transport.send({ method: "DELETE", path, scopes: [`repository:${repository}:delete`, pushPull(repository)] });
    if (response.status !== 202 && response.status !== 200) await this.transport.fail(response, `DELETE ${this.registry}${path}`);
    await discard(response.body);
  }

  /** The blob's size when the repository has it, else undefined. */
  async blobSize(repository: string, digest: string, scopes = [pull(repository)]): Promise<number | undefined> {
    const path = `/v2/${repository}/blobs/${digest}`;
    const response = await this.transport.send({ method: "HEAD", path, scopes, followRedirects: true });
    await discard(response.body);
    if (response.status === 404) return undefined;
    if (response.status !== 200) await this.transport.fail(response, `HEAD ${this.registry}${path}`);
    return Number(header(response.headers, "content-length") ?? -1);
  }

  /** Opens a blob for reading (redirects followed without our credentials). */
  async openBlob(repository: string, digest: string): Promise<Readable> {
    return (await this.openBlobWithLength(repository, digest)).body;
  }

  /** openBlob, with the Content-Length the registry announced (null when it sent none). */
  async openBlobWithLength(repository: string, digest: string): Promise<{ body: Readable; length: number | null }> {
    const path = `/v2/${repository}/blobs/${digest}`;
    const response = await this.transport.send({ method: "GET", path, scopes: [pull(repository)], followRedirects: true });
    if (response.status !== 200) {
      try {
        await this.transport.fail(response, `GET ${this.registry}${path}`);
      } catch (error) {
        throw new SourceError(`registry ${this.registry}: ${(error as Error).message}`, { cause: error });
      }
    }
    const declared = header(response.headers, "content-length");
    return { body: response.body, length: declared !== undefined && /^\d+$/.test(declared) ? Number(declared) : null };
  }

  /**
   * Cross-repository mount (distribution-spec "Mounting a blob from another
   * repository"). True when mounted; otherwise the upload session the registry
   * opened instead, which the caller can use.
   */
  async mountBlob(repository: string, digest: string, from: string): Promise<true | string> {
    const path = `/v2/${repository}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`;
    const response = await this.transport.send({ method: "POST", path, scopes: [pushPull(repository), pull(from)] });
    if (response.status !== 201 && response.status !== 202) await this.transport.fail(response, `POST ${this.registry}${path}`);
    await discard(response.body);
    if (response.status === 201) return true;
    return this.locationOf(response);
  }

  async startUpload(repository: string): Promise<string> {
    const path = `/v2/${repository}/blobs/uploads/`;
    const response = await this.transport.send({ method: "POST", path, scopes: [pushPull(repository)] });
    if (response.status !== 202) await this.transport.fail(response, `POST ${this.registry}${path}`);
    await discard(response.body);
    return this.locationOf(response);
  }

  async cancelUpload(repository: string, location: string): Promise<void> {
    try {
      const response = await this.transport.send({ method: "DELETE", path: location, scopes: [pushPull(repository)] });
      await discard(response.body);
    } catch {
      // best effort: an abandoned session expires on its own
    }
  }

  /**
   * Uploads a blob from a stream, read once and never held whole in memory.
   * The bytes are checked against `digest` and `size` as they flow (a
   * VerifyingStream for that digest is trusted as is, so nothing is hashed
   * twice); the last chunk is held back until the digest matched, so a wrong
   * source never completes an upload, and the session is cancelled.
   *
   * - Small blobs (up to 1 MiB, or `chunkSize` when chunking) are read into one
   *   buffer and sent in one PUT that can be retried as a whole.
   * - Otherwise, by default: one streamed PUT (`POST`, then `PUT ?digest=` with
   *   the whole body and its Content-Length). One request, no copies.
   * - With `chunkSize` or `resumable`, or above MONOLITHIC_LIMIT: PATCH chunks
   *   kept in memory until acknowledged, so an interrupted chunk is resumed
   *   from the offset the registry reports (GET on the session, `Range: 0-<last>`).
   */
  async uploadBlob(repository: string, digest: string, size: number, source: Readable, options: UploadOptions = {}): Promise<void> {
    const verified = source instanceof VerifyingStream && source.digest === digest && source.size === size ? source : verifying(source, digest, size);
    const chunked = options.chunkSize !== undefined || options.resumable === true || size > MONOLITHIC_LIMIT;
    const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
    let location = options.location ?? (await this.startUpload(repository));
    try {
      if (size <= (chunked ? chunkSize : SMALL_BLOB)) {
        const chunks: Buffer[] = [];
        for await (const chunk of verified as AsyncIterable<Buffer>) chunks.push(chunk);
        await this.finishUpload(repository, location, digest, Buffer.concat(chunks));
      } else if (!chunked) {
        await this.putStream(repository, location, digest, size, verified);
      } else {
        location = await this.uploadChunks(repository, location, size, verified, chunkSize, options);
        await this.finishUpload(repository, location, digest, null);
      }
      options.onProgress?.(size);
    } catch (error) {
      await this.cancelUpload(repository, location);
      throw error;
    }
  }

  /** The monolithic upload: the whole blob streamed in the closing PUT. */
  private async putStream(repository: string, location: string, digest: string, size: number, body: Readable): Promise<void> {
    const response = await this.transport.send({
      method: "PUT",
      path: withQuery(location, "digest", digest),
      headers: { "content-type": "application/octet-stream", "content-length": String(size) },
      body,
      scopes: [pushPull(repository)],
      noRetry: true,
    });
    if (response.status !== 201 && response.status !== 204 && response.status !== 200) {
      await this.transport.fail(response, `PUT upload of ${digest} to ${this.registry}/${repository}`);
    }
    await discard(response.body);
  }

  /** PATCHes the stream in chunks of exactly `chunkSize` (the last one shorter); returns the session's latest Location. */
  private async uploadChunks(repository: string, location: string, size: number, source: Readable, chunkSize: number, options: UploadOptions): Promise<string> {
    let offset = 0;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const send = async (chunk: Buffer) => {
      location = await this.sendChunk(repository, location, chunk, offset, options);
      offset += chunk.length;
      options.onProgress?.(offset);
    };
    for await (const chunk of source as AsyncIterable<Buffer>) {
      pending.push(chunk);
      pendingBytes += chunk.length;
      while (pendingBytes >= chunkSize) {
        const all = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
        const rest = all.subarray(chunkSize);
        pending = rest.length > 0 ? [rest] : [];
        pendingBytes = rest.length;
        await send(all.subarray(0, chunkSize));
      }
    }
    if (pendingBytes > 0) await send(Buffer.concat(pending, pendingBytes));
    if (offset !== size) throw new SourceError(`the source delivered ${offset} bytes, not ${size}`);
    return location;
  }

  private async finishUpload(repository: string, location: string, digest: string, body: Buffer | null): Promise<void> {
    const url = withQuery(location, "digest", digest);
    const headers: Record<string, string> = { "content-type": "application/octet-stream" };
    headers["content-length"] = String(body?.length ?? 0);
    const response = await this.transport.send({ method: "PUT", path: url, headers, body: body ?? Buffer.alloc(0), scopes: [pushPull(repository)] });
    if (response.status !== 201 && response.status !== 204 && response.status !== 200) {
      await this.transport.fail(response, `PUT upload of ${digest} to ${this.registry}/${repository}`);
    }
    await discard(response.body);
  }

  /** PATCHes one chunk; on an interruption asks the registry how much arrived and sends the rest. */
  private async sendChunk(repository: string, location: string, chunk: Buffer, offset: number, options: UploadOptions): Promise<string> {
    const attempts = options.resumeAttempts ?? 3;
    let sent = 0;
    for (let attempt = 0; ; attempt++) {
      const part = chunk.subarray(sent);
      const start = offset + sent;
      try {
        const response = await this.transport.send({
          method: "PATCH",
          path: location,
          headers: {
            "content-type": "application/octet-stream",
            "content-range": `${start}-${start + part.length - 1}`,
            "content-length": String(part.length),
          },
          body: part,
          scopes: [pushPull(repository)],
          noRetry: true,
        });
        if (response.status !== 202 && response.status !== 416) await this.transport.fail(response, `PATCH upload to ${this.registry}/${repository}`);
        await discard(response.body);
        if (response.status === 202) return this.locationOf(response, location);
      } catch (error) {
        if (!isTransient(error) || attempt >= attempts) throw error;
      }
      if (attempt >= attempts) throw new ClientError(`upload to ${this.registry}/${repository}: the registry refused to resume the chunk at ${start}`);
      await sleep(200 * 2 ** attempt);
      const received = await this.uploadOffset(repository, location);
      if (received < offset || received > offset + chunk.length) {
        throw new ClientError(`upload to ${this.registry}/${repository}: the registry holds ${received} bytes, cannot resume a chunk at ${offset}`);
      }
      sent = received - offset;
      if (sent === chunk.length) return location;
    }
  }

  /** Bytes the registry holds for an upload session (its `Range: 0-<last>`). */
  async uploadOffset(repository: string, location: string): Promise<number> {
    const response = await this.transport.send({ method: "GET", path: location, scopes: [pushPull(repository)] });
    if (response.status !== 204 && response.status !== 200) await this.transport.fail(response, `GET upload status on ${this.registry}/${repository}`);
    await discard(response.body);
    const range = header(response.headers, "range");
    const match = range ? /^(?:bytes=)?0-(\d+)$/.exec(range) : null;
    if (!match) return 0;
    const last = Number(match[1]);
    // "0-0" is ambiguous (nothing, or one byte); distribution and Ferry send it for an empty session.
    return last === 0 ? 0 : last + 1;
  }

  private locationOf(response: Response, fallback?: string): string {
    const location = header(response.headers, "location");
    if (!location) {
      if (fallback) return fallback;
      throw new ClientError(`${this.registry} answered an upload request without a Location`);
    }
    return new URL(location, response.url).href;
  }

  async listTags(repository: string): Promise<string[]> {
    return this.paginate(`/v2/${repository}/tags/list`, "tags", [pull(repository)]);
  }

  async catalog(): Promise<string[]> {
    return this.paginate(`/v2/_catalog`, "repositories", ["registry:catalog:*"]);
  }

  private async paginate(first: string, field: "tags" | "repositories", scopes: string[]): Promise<string[]> {
    const out: string[] = [];
    let path: string | undefined = first;
    for (let page = 0; path && page < 10_000; page++) {
      const response = await this.transport.send({ method: "GET", path, scopes });
      if (response.status !== 200) await this.transport.fail(response, `GET ${this.registry}${path}`);
      const body = JSON.parse((await readAll(response.body)).toString("utf8")) as Record<string, unknown>;
      const items = body[field];
      if (Array.isArray(items)) out.push(...items.filter((t): t is string => typeof t === "string"));
      const link = header(response.headers, "link");
      const next = link ? /<([^>]+)>\s*;\s*rel="?next"?/.exec(link) : null;
      path = next ? new URL(next[1]!, response.url).href : undefined;
    }
    return out;
  }
}

export function pull(repository: string): string {
  return `repository:${repository}:pull`;
}

export function pushPull(repository: string): string {
  return `repository:${repository}:pull,push`;
}

/** Pipes a stream through a verifier for digest and size; a failing source fails the verifier. */
function verifying(source: Readable, digest: string, size: number): VerifyingStream {
  const verifier = new VerifyingStream(digest, size);
  // Its failure reaches the consumer (the upload) through the stream itself; never as an unhandled event.
  verifier.on("error", () => undefined);
  source.once("error", (error) => verifier.destroy(error instanceof SourceError ? error : new SourceError(errorMessage(error), { cause: error })));
  return source.pipe(verifier);
}

function withQuery(location: string, key: string, value: string): string {
  const url = new URL(location);
  url.searchParams.set(key, value);
  return url.href;
}

function mediaTypeFromBody(bytes: Buffer): string {
  try {
    const body = JSON.parse(bytes.toString("utf8")) as { mediaType?: unknown; manifests?: unknown };
    if (typeof body.mediaType === "string") return body.mediaType;
    return Array.isArray(body.manifests) ? OCI_INDEX : OCI_MANIFEST;
  } catch {
    return OCI_MANIFEST;
  }
}
