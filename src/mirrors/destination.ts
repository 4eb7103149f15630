/**
 * This registry's store, under a mirrored repository, as a destination of
 * the client library's streaming copy (src/client/copy.ts): scheduled sync
 * copies upstream images with it. Blobs arrive already checked by the copy's
 * VerifyingStream and go straight into the blob store (committed only when
 * the stream ended whole); manifests are stored byte for byte through the
 * same push path as a client's (sparse, so federation judges foreign layers
 * and an index can precede nothing missing). Foreign layers stay references.
 */
import type { Readable } from "node:stream";
import type { Descriptor } from "../oci/manifest.js";
import { parseManifestReference } from "../oci/reference.js";
import type { ImageDestination, ManifestData } from "../client/image.js";
import type { MetaStore } from "../metadata/meta-store.js";
import type { ManifestService } from "../registry/manifests.js";

export class MirrorDestination implements ImageDestination {
  readonly name: string;
  readonly storesForeignBytes = false;
  readonly singleImage = false;
  /** Bytes stored by putBlob (the sync's record). */
  bytesStored = 0;

  constructor(
    private readonly repository: string,
    private readonly tag: string,
    private readonly meta: MetaStore,
    private readonly manifests: ManifestService,
    private readonly storeBlob: (repository: string, digest: string, size: number, stream: Readable) => Promise<void>,
  ) {
    this.name = `this registry's ${repository}`;
  }

  async hasBlob(descriptor: Descriptor): Promise<boolean> {
    return (await this.meta.linkedBlob(this.repository, descriptor.digest)) !== null;
  }

  async putBlob(descriptor: Descriptor, stream: Readable, onProgress: (bytes: number) => void): Promise<void> {
    await this.storeBlob(this.repository, descriptor.digest, descriptor.size, stream);
    this.bytesStored += descriptor.size;
    onProgress(descriptor.size);
  }

  async putManifest(manifest: ManifestData, root: boolean): Promise<void> {
    await this.manifests.push({
      repository: this.repository,
      reference: root ? { kind: "tag", tag: this.tag } : parseManifestReference(manifest.digest),
      body: manifest.bytes,
      contentType: manifest.mediaType,
      sparse: true,
    });
  }

  async commit(): Promise<void> {}

  async abort(): Promise<void> {}
}
