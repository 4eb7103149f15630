/**
 * Manifest use cases: push with reference checks, pull by tag or digest,
 * delete. Manifests are kept byte-for-byte; their digest is of those bytes.
 */
import { RegistryError } from "../oci/errors.js";
import { digestOf, type ParsedDigest } from "../oci/digest.js";
import { parseManifest, effectiveArtifactType, type Descriptor, type ParsedManifest } from "../oci/manifest.js";
import { isManifestMediaType } from "../oci/media-types.js";
import type { ManifestReference } from "../oci/reference.js";
import { MissingReferencesError, type ManifestRecord, type ForeignLayerWrite, type ManifestWrite, type PutManifestResult } from "../metadata/meta-store.js";
import type { RegistryDeps } from "./context.js";
import { ManifestCache } from "./manifest-cache.js";

export interface PushedManifest {
  digest: string;
  /** The media type the manifest was stored under (for push events). */
  mediaType: string;
  subject?: string;
  /** Texts for `Warning` headers (federation policy said "warn"). */
  warnings: string[];
  /** Push by tag: the digest the tag named just before (null: a new tag), for the audit log. */
  previousDigest?: string | null;
}

export interface PushRequest {
  repository: string;
  reference: ManifestReference;
  body: Buffer;
  contentType: string | undefined;
  /** Tags to point at the manifest besides a tag in the path (`tag` query parameters on a push by digest). */
  extraTags?: readonly string[];
  /**
   * Store the manifest even when blobs or child manifests it references are
   * not in the repository yet (OCI "sparse" manifests). Pushes get it from
   * config `manifests.sparse`; mirrors always store their upstream's
   * manifests this way and fetch the rest on demand.
   */
  sparse?: boolean;
}

export class ManifestService {
  private readonly cache: ManifestCache;

  constructor(private readonly deps: RegistryDeps) {
    this.cache = new ManifestCache(deps.meta);
  }

  async push(request: PushRequest): Promise<PushedManifest> {
    const { repository, reference, body } = request;
    const digest = this.digestFor(body, reference);
    const manifest = parseManifest(body, request.contentType);
    const blobs = await this.checkReferences(repository, manifest, request.sparse ?? this.deps.limits.sparseManifests === true);
    const foreign = await this.admitForeignLayers(repository, digest, manifest, blobs.foreign);
    const written = await this.store(
      repository,
      {
        digest,
        mediaType: manifest.mediaType,
        content: body,
        subjectDigest: manifest.subject?.digest ?? null,
        artifactType: effectiveArtifactType(manifest) ?? null,
        annotations: manifest.annotations ?? null,
        blobs: blobs.held,
        manifests: blobs.childManifests,
        foreignLayers: foreign.marks,
        ...(blobs.absent ? { absent: blobs.absent } : {}),
      },
      reference.kind === "tag" ? [reference.tag, ...(request.extraTags ?? [])] : (request.extraTags ?? []),
    );
    // Read by the write's transaction (for the audit log).
    const previousDigest = reference.kind === "tag" ? (written.previous.get(reference.tag) ?? null) : undefined;
    return { digest, mediaType: manifest.mediaType, subject: manifest.subject?.digest, warnings: foreign.warnings, previousDigest };
  }

  private async store(repository: string, write: ManifestWrite, tags: readonly string[]): Promise<PutManifestResult> {
    try {
      return await this.deps.meta.putManifest(repository, write, tags);
    } catch (error) {
      if (!(error instanceof MissingReferencesError)) throw error;
      const gone = [...write.blobs, ...write.manifests].filter((d) => error.digests.includes(d));
      throw manifestBlobUnknown(gone.map((digest) => ({ digest, mediaType: "(collected meanwhile)", size: 0 })));
    }
  }

  async get(repository: string, reference: ManifestReference): Promise<ManifestRecord> {
    const record = await this.cache.get(repository, reference);
    if (!record) throw manifestUnknown(reference);
    return record;
  }

  /** The tags that point at a manifest (deleting it deletes them too; notifications report each). */
  async tagsOf(repository: string, digest: string): Promise<string[]> {
    return (await this.deps.meta.tagsOf?.(repository, digest)) ?? [];
  }

  async delete(repository: string, reference: ManifestReference): Promise<void> {
    const deleted =
      reference.kind === "tag"
        ? await this.deps.meta.deleteTag(repository, reference.tag)
        : await this.deps.meta.deleteManifest(repository, reference.digest.digest);
    if (!deleted) throw manifestUnknown(reference);
  }

  private digestFor(body: Buffer, reference: ManifestReference): string {
    if (reference.kind === "tag") return digestOf(body, "sha256");
    const expected: ParsedDigest = reference.digest;
    const actual = digestOf(body, expected.algorithm);
    if (actual !== expected.digest) {
      throw new RegistryError("DIGEST_INVALID", `the manifest's digest is ${actual}, not ${expected.digest} as in the URL`, {
        detail: { expected: expected.digest, actual },
      });
    }
    return actual;
  }

  /**
   * Every referenced blob and child manifest must be in the repository
   * (MANIFEST_BLOB_UNKNOWN otherwise), except layers that carry `urls`:
   * those are foreign and go to federation. `sparse`: what is missing is
   * recorded as absent instead of refused.
   */
  private async checkReferences(repository: string, manifest: ParsedManifest, sparse: boolean) {
    const { meta } = this.deps;
    const blobDescriptors: Descriptor[] = [];
    const manifestDescriptors: Descriptor[] = [];
    if (manifest.config) blobDescriptors.push(manifest.config);
    blobDescriptors.push(...manifest.layers);
    for (const child of manifest.manifests) {
      (isManifestMediaType(child.mediaType) ? manifestDescriptors : blobDescriptors).push(child);
    }

    // One lookup for all blobs gives both facts we need: whether the repository holds each, and its size.
    const digests = unique(blobDescriptors.map((d) => d.digest));
    const linked = digests.length > 0 ? await meta.linkedBlobs(repository, digests) : new Map<string, number>();
    const sizes = new Map<string, number | null>(digests.map((digest) => [digest, linked.get(digest) ?? null]));
    const foreign: Descriptor[] = [];
    const unknown: Descriptor[] = [];
    for (const descriptor of blobDescriptors) {
      if (sizes.get(descriptor.digest) !== null) continue;
      const isLayer = manifest.layers.includes(descriptor);
      if (isLayer && descriptor.urls && descriptor.urls.length > 0) {
        if (!foreign.some((f) => f.digest === descriptor.digest)) foreign.push(descriptor);
      } else {
        unknown.push(descriptor);
      }
    }
    const children = unique(manifestDescriptors.map((d) => d.digest));
    const missingChildren = new Set(children.length > 0 ? await meta.missingManifests(repository, children) : []);
    let absent: { blobs: string[]; manifests: string[] } | undefined;
    if (sparse) {
      if (unknown.length > 0 || missingChildren.size > 0) absent = { blobs: unique(unknown.map((d) => d.digest)), manifests: [...missingChildren] };
    } else {
      unknown.push(...manifestDescriptors.filter((d) => missingChildren.has(d.digest)));
      if (unknown.length > 0) throw manifestBlobUnknown(unknown);
    }

    for (const descriptor of blobDescriptors) checkSize(descriptor, sizes.get(descriptor.digest) ?? null);
    const held = [...sizes].filter(([, size]) => size !== null).map(([digest]) => digest);
    return { held, foreign, childManifests: children.filter((d) => !missingChildren.has(d)), absent };
  }

  private async admitForeignLayers(repository: string, manifestDigest: string, manifest: ParsedManifest, layers: Descriptor[]) {
    if (layers.length === 0) return { marks: [] as ForeignLayerWrite[], warnings: [] as string[] };
    const isPrivate = !this.deps.access.isAnonymousReadable(repository);
    return this.deps.federation.admit({ repository, manifestDigest, layers, isPrivate });
  }
}

/** A descriptor whose size disagrees with the blob would make every client's pull fail: refuse it now. */
function checkSize(descriptor: Descriptor, actual: number | null): void {
  if (actual === null || actual === descriptor.size) return;
  throw new RegistryError("MANIFEST_INVALID", `descriptor for ${descriptor.digest} says ${descriptor.size} bytes but the blob has ${actual}`, {
    detail: { digest: descriptor.digest, declaredSize: descriptor.size, actualSize: actual },
  });
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

export function manifestUnknown(reference: ManifestReference): RegistryError {
  const name = reference.kind === "tag" ? reference.tag : reference.digest.digest;
  return new RegistryError("MANIFEST_UNKNOWN", `manifest ${name} is not known to this repository`, {
    detail: reference.kind === "tag" ? { tag: name } : { digest: name },
  });
}

function manifestBlobUnknown(descriptors: Descriptor[]): RegistryError {
  const entries = descriptors.map((d) => ({
    code: "MANIFEST_BLOB_UNKNOWN" as const,
    message: `the manifest references ${d.digest} (${d.mediaType}), which is not in this repository: push it first`,
    detail: { digest: d.digest, mediaType: d.mediaType },
  }));
  const [first, ...rest] = entries;
  return new RegistryError("MANIFEST_BLOB_UNKNOWN", first!.message, { detail: first!.detail, more: rest });
}
