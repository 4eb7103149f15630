/**
 * Layer media types across the two manifest formats. A manifest Ferry
 * generates (from a docker-archive) must use one format's types throughout:
 * a Docker schema 2 manifest with an OCI non-distributable layer type is
 * refused by skopeo and podman ("unsupported MIME type for compression").
 * Docker has no zstd layer types, so zstd forces an OCI manifest.
 */
const PAIRS: Array<[docker: string, oci: string]> = [
  ["application/vnd.docker.image.rootfs.diff.tar", "application/vnd.oci.image.layer.v1.tar"],
  ["application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.oci.image.layer.v1.tar+gzip"],
  ["application/vnd.docker.image.rootfs.foreign.diff.tar", "application/vnd.oci.image.layer.nondistributable.v1.tar"],
  ["application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"],
];
const TO_DOCKER = new Map(PAIRS.map(([docker, oci]) => [oci, docker]));
const TO_OCI = new Map(PAIRS);

/** The Docker schema 2 type for a layer type, or undefined when Docker has none (zstd, unknown types). */
export function dockerLayerType(mediaType: string): string | undefined {
  if (TO_OCI.has(mediaType)) return mediaType;
  return TO_DOCKER.get(mediaType);
}

/** The OCI type for a layer type (OCI types are returned as they are). */
export function ociLayerType(mediaType: string): string {
  return TO_OCI.get(mediaType) ?? mediaType;
}
