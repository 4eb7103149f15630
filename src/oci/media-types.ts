/** Media types Ferry understands (OCI image-spec 1.1, Docker image manifest v2 schema 2). */

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json";
export const DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws";
export const OCI_EMPTY_CONFIG = "application/vnd.oci.empty.v1+json";

export const DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
export const OCI_NONDISTRIBUTABLE_LAYERS = [
  "application/vnd.oci.image.layer.nondistributable.v1.tar",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
] as const;

export type ManifestKind = "image" | "index";

export const MANIFEST_KIND: Readonly<Record<string, ManifestKind>> = {
  [OCI_MANIFEST]: "image",
  [DOCKER_MANIFEST]: "image",
  [OCI_INDEX]: "index",
  [DOCKER_MANIFEST_LIST]: "index",
};

export function isManifestMediaType(mediaType: string): boolean {
  return mediaType in MANIFEST_KIND;
}

/** Layers whose media type says "do not push these bytes" (see docs/federation.md). */
export function isNonDistributableMediaType(mediaType: string): boolean {
  return mediaType === DOCKER_FOREIGN_LAYER || (OCI_NONDISTRIBUTABLE_LAYERS as readonly string[]).includes(mediaType);
}

/** Strips parameters and case from a Content-Type header value. */
export function normalizeContentType(value: string | undefined): string | undefined {
  if (!value) return undefined;
  const bare = value.split(";")[0]!.trim().toLowerCase();
  return bare === "" ? undefined : bare;
}
