// Test content: random blobs with precomputed digests, and OCI manifests.
import { createHash, randomBytes } from 'node:crypto';
import type { BodyParts } from './http.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';

/** A blob as sent on the wire: its bytes (in parts), size and digest. */
export interface BlobData {
  parts: BodyParts;
  size: number;
  digest: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export function sha256(parts: BodyParts): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return `sha256:${h.digest('hex')}`;
}

export function blobOf(bytes: Uint8Array): BlobData {
  return { parts: [bytes], size: bytes.length, digest: sha256([bytes]) };
}

export function randomBlob(size: number): BlobData {
  return blobOf(randomBytes(size));
}

const PREFIX_LEN = 32;
let uniqueCounter = 0;

/**
 * Fresh content for pushes without regenerating megabytes each time: one
 * random payload per size, prefixed by 32 unique bytes per push. Every push
 * therefore has a new digest (no registry can dedup it away), while the only
 * per-push work is hashing, which callers do before the timed region.
 */
export class UniqueBlobFactory {
  private readonly shared: Buffer;

  constructor(readonly size: number) {
    if (size < PREFIX_LEN) throw new Error(`blob size ${size} is smaller than the unique prefix`);
    this.shared = randomBytes(size - PREFIX_LEN);
  }

  next(): BlobData {
    const prefix = Buffer.alloc(PREFIX_LEN);
    randomBytes(24).copy(prefix, 0);
    prefix.writeBigUInt64BE(BigInt(++uniqueCounter), 24);
    const parts = [prefix, this.shared];
    return { parts, size: this.size, digest: sha256(parts) };
  }

  many(count: number): BlobData[] {
    return Array.from({ length: count }, () => this.next());
  }
}

export function descriptor(blob: BlobData, mediaType: string): Descriptor {
  return { mediaType, digest: blob.digest, size: blob.size };
}

/** Serialised OCI image manifest; the same bytes go to both registries. */
export function imageManifest(config: Descriptor, layers: Descriptor[], annotations?: Record<string, string>): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config,
      layers,
      ...(annotations ? { annotations } : {}),
    }),
  );
}

/** A small but plausible image config, so servers that parse configs are happy. */
export function imageConfig(layers: BlobData[], label: string): BlobData {
  return blobOf(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Env: ['PATH=/usr/local/bin:/usr/bin:/bin'], Labels: { 'ferry.bench': label } },
        rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
        history: layers.map((_, i) => ({ created_by: `bench layer ${i}` })),
      }),
    ),
  );
}
