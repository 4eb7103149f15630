/**
 * Copies an image (one manifest, or an index and everything under it) from a
 * source to a destination. Blobs stream from source to destination through a
 * verifier, `jobs` at a time; manifests go up byte-for-byte after their blobs.
 *
 * Foreign layers (docs/federation.md): a layer with `urls` is not uploaded to
 * a registry and its descriptor is kept; layouts and archives store its bytes,
 * read from the `urls` first (no credentials) and then from the registry.
 * With `includeForeign` the bytes are uploaded as a regular layer and the
 * manifest is rewritten (distributable media type, no `urls`): the only case
 * where a manifest changes, reported in the result.
 */
import type { Readable } from "node:stream";
import { digestOf, parseDigest } from "../oci/digest.js";
import { parseManifest, type Descriptor } from "../oci/manifest.js";
import { isManifestMediaType } from "../oci/media-types.js";
import { ClientError, NotFoundError, SourceError, errorMessage, isTransient } from "./errors.js";
import { distributableMediaType, isForeign } from "./foreign.js";
import {
  formatPlatform,
  platformMatches,
  type BlobOutcome,
  type ImageDestination,
  type ImageSource,
  type ManifestData,
  type Platform,
  type ProgressEvent,
} from "./image.js";
import { VerifyingStream } from "./verify.js";

export interface CopyOptions {
  /** Parallel blob transfers (default 4). */
  jobs?: number;
  /** Copy only this platform's manifest out of an index. */
  platform?: Platform;
  /** Upload foreign layers' bytes as regular layers (rewrites the manifest). */
  includeForeign?: boolean;
  onEvent?: (event: ProgressEvent) => void;
  /** Attempts per blob on transient destination errors (default 3). */
  attempts?: number;
}

export interface CopyResult {
  /** Digest of the root manifest as written to the destination. */
  digest: string;
  mediaType: string;
  /** Digest of the root manifest in the source. */
  sourceDigest: string;
  /** True when --include-foreign changed a manifest. */
  rewritten: boolean;
  /** Foreign layers left as references (not uploaded). */
  foreignSkipped: Descriptor[];
  blobs: Record<BlobOutcome, number>;
}

/** A counting semaphore: at most `limit` blob transfers at once. */
class Pool {
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly limit: number) {}
  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
    try {
      return await task();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

export async function copyImage(source: ImageSource, destination: ImageDestination, options: CopyOptions = {}): Promise<CopyResult> {
  const copier = new Copier(source, destination, options);
  await destination.prepare?.();
  try {
    const result = await copier.run();
    await destination.commit();
    return result;
  } catch (error) {
    await destination.abort().catch(() => undefined);
    throw error;
  }
}

/** Picks a platform's manifest from an index (or returns the manifest itself). */
export async function selectPlatform(source: ImageSource, root: ManifestData, platform: Platform): Promise<ManifestData> {
  const parsed = parseManifest(root.bytes, root.mediaType);
  if (parsed.kind !== "index") {
    // A single image has one platform, in its config: asking for another is an error, not a silent substitute.
    const actual = await configPlatform(source, parsed.config);
    if (actual && !platformMatches(platform, { mediaType: "", digest: "", size: 0, platform: { ...actual } })) {
      throw new NotFoundError(`the image is ${formatPlatform(actual)}, not ${formatPlatform(platform)} (it is a single-platform image, not an index)`);
    }
    return root;
  }
  const child = parsed.manifests.find((m) => platformMatches(platform, m));
  if (!child) {
    const available = parsed.manifests.map((m) => formatPlatform(m.platform)).join(", ");
    throw new NotFoundError(`no manifest for platform ${formatPlatform(platform)} in the index (available: ${available || "none"})`);
  }
  return source.manifest(child);
}

/** os/architecture/variant from an image's config blob, or undefined when it cannot be read. */
async function configPlatform(source: ImageSource, config: Descriptor | undefined): Promise<Platform | undefined> {
  if (!config || config.size > 4 * 1024 * 1024) return undefined;
  for (const candidate of source.blobCandidates(config)) {
    try {
      const stream = await candidate.open();
      const verifier = new VerifyingStream(config.digest, config.size);
      stream.on("error", (error) => verifier.destroy(error));
      const chunks: Buffer[] = [];
      for await (const chunk of stream.pipe(verifier) as AsyncIterable<Buffer>) chunks.push(chunk);
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { os?: unknown; architecture?: unknown; variant?: unknown };
      if (typeof body.os !== "string" || typeof body.architecture !== "string") return undefined;
      return { os: body.os, architecture: body.architecture, ...(typeof body.variant === "string" && body.variant ? { variant: body.variant } : {}) };
    } catch {
      continue;
    }
  }
  return undefined;
}

class Copier {
  private readonly pool: Pool;
  private readonly emit: (event: ProgressEvent) => void;
  private readonly foreignSkipped: Descriptor[] = [];
  private readonly blobs: Record<BlobOutcome, number> = { copied: 0, exists: 0, mounted: 0, "foreign-skipped": 0 };
  /** One transfer per digest even when several manifests share a blob. */
  private readonly inFlight = new Map<string, Promise<void>>();
  private rewritten = false;

  constructor(
    private readonly source: ImageSource,
    private readonly destination: ImageDestination,
    private readonly options: CopyOptions,
  ) {
    this.pool = new Pool(Math.max(1, options.jobs ?? 4));
    this.emit = options.onEvent ?? (() => undefined);
  }

  async run(): Promise<CopyResult> {
    let root = await this.source.rootManifest();
    if (this.options.platform) root = await selectPlatform(this.source, root, this.options.platform);
    const written = await this.copyManifest(root, true);
    return {
      digest: written.digest,
      mediaType: written.mediaType,
      sourceDigest: root.digest,
      rewritten: this.rewritten,
      foreignSkipped: this.foreignSkipped,
      blobs: this.blobs,
    };
  }

  private async copyManifest(manifest: ManifestData, root: boolean): Promise<ManifestData> {
    const parsed = parseManifest(manifest.bytes, manifest.mediaType);
    let out = manifest;
    if (parsed.kind === "index") {
      if (this.destination.singleImage) {
        throw new ClientError(`${this.destination.name} holds one image and the source is an index; choose one with --platform os/arch`);
      }
      const children = await Promise.all(
        parsed.manifests.map(async (descriptor) => {
          if (!isManifestMediaType(descriptor.mediaType)) {
            await this.copyBlob(descriptor, false);
            return descriptor;
          }
          const child = await this.source.manifest(descriptor);
          const written = await this.copyManifest(child, false);
          return { ...descriptor, digest: written.digest, size: written.bytes.length };
        }),
      );
      if (children.some((c, i) => c.digest !== parsed.manifests[i]!.digest)) {
        out = rewriteDescriptors(manifest, "manifests", children);
      }
    } else {
      const config = parsed.config!;
      const layers = parsed.layers;
      const include = this.options.includeForeign === true;
      const tasks: Promise<void>[] = [this.copyBlob(config, false)];
      for (const layer of layers) {
        if (isForeign(layer) && !include && !this.destination.storesForeignBytes) {
          this.foreignSkipped.push(layer);
          this.blobs["foreign-skipped"]++;
          this.emit({ type: "blob-done", digest: layer.digest, size: layer.size, outcome: "foreign-skipped" });
          this.emit({
            type: "notice",
            message: `foreign layer ${layer.digest} (${layer.size} bytes) not uploaded; it stays at ${layer.urls!.join(", ")}`,
          });
          continue;
        }
        tasks.push(this.copyBlob(layer, isForeign(layer)));
      }
      await settleAll(tasks);
      if (include && layers.some(isForeign)) {
        const rewrittenLayers = layers.map((layer) => {
          if (!isForeign(layer)) return layer;
          const { urls: _urls, ...rest } = layer;
          return { ...rest, mediaType: distributableMediaType(layer.mediaType) };
        });
        out = rewriteDescriptors(manifest, "layers", rewrittenLayers);
      }
    }
    if (out !== manifest) {
      this.rewritten = true;
      this.emit({
        type: "notice",
        message: `manifest ${manifest.digest} rewritten by --include-foreign: new digest ${out.digest}`,
      });
    }
    await this.destination.putManifest(out, root);
    this.emit({ type: "manifest", digest: out.digest, mediaType: out.mediaType, root });
    return out;
  }

  private copyBlob(descriptor: Descriptor, foreign: boolean): Promise<void> {
    const existing = this.inFlight.get(descriptor.digest);
    if (existing) return existing;
    const task = this.pool.run(() => this.transfer(descriptor, foreign));
    this.inFlight.set(descriptor.digest, task);
    return task;
  }

  private async transfer(descriptor: Descriptor, foreign: boolean): Promise<void> {
    const { digest, size } = descriptor;
    this.emit({ type: "blob-start", digest, size, mediaType: descriptor.mediaType });
    // A foreign layer forced in is checked by digest alone, like any blob.
    const plain = foreign ? { ...descriptor, urls: undefined } : descriptor;
    if (await this.destination.hasBlob(plain)) return this.done(descriptor, "exists");
    const from = this.source.location;
    if (from && this.destination.mountBlob && (await this.destination.mountBlob(plain, from))) return this.done(descriptor, "mounted");

    const attempts = this.options.attempts ?? 3;
    const failures: string[] = [];
    for (const candidate of this.source.blobCandidates(descriptor)) {
      for (let attempt = 1; ; attempt++) {
        let stream: Readable;
        try {
          stream = await candidate.open();
        } catch (error) {
          failures.push(`${candidate.name}: ${errorMessage(error)}`);
          const absent = (error as { code?: unknown }).code === "ENOENT";
          if (!(absent && candidate.quietWhenMissing)) this.emit({ type: "source-failed", digest, source: candidate.name, error: errorMessage(error) });
          break;
        }
        const verifier = new VerifyingStream(digest, size, (bytes) => this.emit({ type: "blob-progress", digest, bytes, size }));
        stream.on("error", (error) => verifier.destroy(error instanceof SourceError ? error : new SourceError(errorMessage(error))));
        // The source flows into the verifier before the destination reads it, so a mismatch may be found
        // first; the destination still sees it (the stream is errored), never an unhandled 'error' event.
        verifier.on("error", () => undefined);
        stream.pipe(verifier);
        try {
          await this.destination.putBlob(plain, verifier, () => undefined, { retry: attempt > 1 });
          stream.destroy();
          return this.done(descriptor, "copied", candidate.name);
        } catch (error) {
          stream.destroy();
          if (error instanceof SourceError) {
            failures.push(`${candidate.name}: ${error.message}`);
            this.emit({ type: "source-failed", digest, source: candidate.name, error: error.message });
            break;
          }
          if (!isTransient(error) || attempt >= attempts) throw error;
          await new Promise((resolve) => setTimeout(resolve, 500 * attempt));
        }
      }
    }
    const list = failures.length > 0 ? failures.map((f) => `\n  - ${f}`).join("") : " (no source has it)";
    throw new ClientError(`blob ${digest} (${size} bytes) could not be fetched from any source:${list}`);
  }

  private done(descriptor: Descriptor, outcome: BlobOutcome, source?: string): void {
    this.blobs[outcome]++;
    this.emit({ type: "blob-done", digest: descriptor.digest, size: descriptor.size, outcome, ...(source ? { source } : {}) });
  }
}

/** Waits for every task, then throws the first failure (so no transfer is left running unobserved). */
async function settleAll(tasks: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(tasks);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
}

/**
 * Re-serializes a manifest with one descriptor list replaced. Used only by
 * --include-foreign, which must change the manifest; the digest algorithm is kept.
 */
function rewriteDescriptors(manifest: ManifestData, field: "layers" | "manifests", descriptors: Descriptor[]): ManifestData {
  const body = JSON.parse(manifest.bytes.toString("utf8")) as Record<string, unknown>;
  body[field] = descriptors;
  const bytes = Buffer.from(JSON.stringify(body, null, 2));
  return { bytes, mediaType: manifest.mediaType, digest: digestOf(bytes, parseDigest(manifest.digest).algorithm) };
}
