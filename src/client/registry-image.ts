/** A repository on a registry as an image source and destination. */
import type { Readable } from "node:stream";
import type { Descriptor } from "../oci/manifest.js";
import { manifestReferenceOf, type ImageReference } from "../oci/image-reference.js";
import { isForeign, openForeignUrl } from "./foreign.js";
import type { BlobCandidate, ImageDestination, ImageSource, ManifestData, PutBlobOptions, RegistryLocation } from "./image.js";
import type { RegistryClient } from "./registry.js";

export class RegistrySource implements ImageSource {
  readonly name: string;
  readonly location: RegistryLocation;

  constructor(
    private readonly client: RegistryClient,
    private readonly ref: ImageReference,
  ) {
    this.name = `${ref.registry}/${ref.repository}`;
    this.location = { registry: ref.registry, repository: ref.repository };
  }

  rootManifest(): Promise<ManifestData> {
    return this.client.getManifest(this.ref.repository, manifestReferenceOf(this.ref));
  }

  manifest(descriptor: Descriptor): Promise<ManifestData> {
    return this.client.getManifest(this.ref.repository, descriptor.digest);
  }

  /** docs/federation.md: a foreign layer's `urls` first, in order, then the registry. */
  blobCandidates(descriptor: Descriptor): BlobCandidate[] {
    const candidates: BlobCandidate[] = (descriptor.urls ?? []).map((url) => ({ name: url, open: () => openForeignUrl(url) }));
    candidates.push({
      name: `registry ${this.name}`,
      open: () => this.client.openBlob(this.ref.repository, descriptor.digest),
    });
    return candidates;
  }

  async close(): Promise<void> {}
}

export class RegistryDestination implements ImageDestination {
  readonly name: string;
  readonly storesForeignBytes = false;
  readonly singleImage = false;
  /** Upload sessions a refused mount opened, reused by putBlob. */
  private readonly sessions = new Map<string, string>();

  constructor(
    private readonly client: RegistryClient,
    private readonly ref: ImageReference,
    private readonly chunkSize?: number,
  ) {
    this.name = `${ref.registry}/${ref.repository}`;
  }

  async prepare(): Promise<void> {
    await this.client.checkRegistry();
  }

  async hasBlob(descriptor: Descriptor): Promise<boolean> {
    if (isForeign(descriptor)) return false;
    const size = await this.client.blobSize(this.ref.repository, descriptor.digest, [`repository:${this.ref.repository}:pull,push`]);
    return size !== undefined;
  }

  async mountBlob(descriptor: Descriptor, from: RegistryLocation): Promise<boolean> {
    if (from.registry !== this.ref.registry || from.repository === this.ref.repository) return false;
    const result = await this.client.mountBlob(this.ref.repository, descriptor.digest, from.repository);
    if (result === true) return true;
    this.sessions.set(descriptor.digest, result);
    return false;
  }

  /** One streamed PUT; after a failed attempt, resumable chunks (see RegistryClient.uploadBlob). */
  async putBlob(descriptor: Descriptor, stream: Readable, onProgress: (bytes: number) => void, options: PutBlobOptions = {}): Promise<void> {
    const location = this.sessions.get(descriptor.digest);
    this.sessions.delete(descriptor.digest);
    await this.client.uploadBlob(this.ref.repository, descriptor.digest, descriptor.size, stream, {
      onProgress,
      ...(options.retry ? { resumable: true } : {}),
      ...(location ? { location } : {}),
      ...(this.chunkSize ? { chunkSize: this.chunkSize } : {}),
    });
  }

  async putManifest(manifest: ManifestData, root: boolean): Promise<void> {
    // Children of an index go by digest; the root by the tag asked for ("latest" as docker does), or its digest.
    const reference = root ? (this.ref.tag ?? (this.ref.digest ? manifest.digest : "latest")) : manifest.digest;
    await this.client.putManifest(this.ref.repository, reference, manifest);
  }

  async commit(): Promise<void> {}

  async abort(): Promise<void> {
    for (const location of this.sessions.values()) await this.client.cancelUpload(this.ref.repository, location);
    this.sessions.clear();
  }
}
