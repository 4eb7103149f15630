/**
 * Builds small, valid images for tests: gzip'd tar layers, an image config,
 * an OCI manifest (optionally with foreign layers) and an OCI image layout
 * directory that skopeo, podman and the Ferry client can read.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import tar from "tar-stream";

export interface Blob {
  digest: string;
  size: number;
  bytes: Buffer;
  mediaType: string;
  urls?: string[];
}

export interface TestImage {
  manifest: Buffer;
  manifestDigest: string;
  mediaType: string;
  config: Blob;
  layers: Blob[];
}

export function sha256(bytes: Buffer | string): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

export function blobOf(bytes: Buffer, mediaType: string): Blob {
  return { digest: sha256(bytes), size: bytes.length, bytes, mediaType };
}

/** A reproducible .tar.gz with the given files. */
export async function tarGz(files: Record<string, string | Buffer>): Promise<{ gz: Buffer; diffId: string }> {
  const pack = tar.pack();
  for (const [name, content] of Object.entries(files)) {
    const data = Buffer.isBuffer(content) ? content : Buffer.from(content);
    pack.entry({ name, size: data.length, mtime: new Date(0), mode: 0o644 }, data);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  const raw = Buffer.concat(chunks);
  return { gz: gzipSync(raw, { level: 1 }), diffId: sha256(raw) };
}

export interface ImageSpec {
  /** Files per layer; each becomes one tar+gzip layer. */
  layers?: Array<Record<string, string | Buffer>>;
  /** Foreign layers (not to be uploaded), with their URLs. */
  foreign?: Array<{ files: Record<string, string | Buffer>; urls: string[]; mediaType?: string }>;
  architecture?: string;
  /** Docker schema 2 media types instead of OCI. */
  docker?: boolean;
  annotations?: Record<string, string>;
}

export async function buildImage(spec: ImageSpec = {}): Promise<TestImage> {
  const docker = spec.docker ?? false;
  const layerType = docker ? "application/vnd.docker.image.rootfs.diff.tar.gzip" : "application/vnd.oci.image.layer.v1.tar+gzip";
  const layers: Blob[] = [];
  const diffIds: string[] = [];
  for (const files of spec.layers ?? [{ "hello.txt": "hello from ferry\n" }]) {
    const { gz, diffId } = await tarGz(files);
    layers.push(blobOf(gz, layerType));
    diffIds.push(diffId);
  }
  for (const foreign of spec.foreign ?? []) {
    const { gz, diffId } = await tarGz(foreign.files);
    const mediaType =
      foreign.mediaType ?? (docker ? "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" : "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip");
    layers.push({ ...blobOf(gz, mediaType), urls: foreign.urls });
    diffIds.push(diffId);
  }
  const configJson = JSON.stringify({
    architecture: spec.architecture ?? "amd64",
    os: "linux",
    config: {},
    rootfs: { type: "layers", diff_ids: diffIds },
  });
  const config = blobOf(
    Buffer.from(configJson),
    docker ? "application/vnd.docker.container.image.v1+json" : "application/vnd.oci.image.config.v1+json",
  );
  const mediaType = docker ? "application/vnd.docker.distribution.manifest.v2+json" : "application/vnd.oci.image.manifest.v1+json";
  const manifestObject: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType,
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size, ...(l.urls ? { urls: l.urls } : {}) })),
  };
  if (spec.annotations) manifestObject.annotations = spec.annotations;
  const manifest = Buffer.from(JSON.stringify(manifestObject, null, 2));
  return { manifest, manifestDigest: sha256(manifest), mediaType, config, layers };
}

/**
 * Writes an OCI image layout (image-spec "image-layout") holding `images`,
 * each under its tag. Foreign layers' bytes are left out unless `includeForeign`.
 */
export async function writeLayout(dir: string, images: Array<{ tag: string; image: TestImage }>, includeForeign = false): Promise<void> {
  const blobsDir = join(dir, "blobs", "sha256");
  await mkdir(blobsDir, { recursive: true });
  const put = (blob: { digest: string; bytes: Buffer }) => writeFile(join(blobsDir, blob.digest.slice(7)), blob.bytes);
  const manifests = [];
  for (const { tag, image } of images) {
    await put(image.config);
    for (const layer of image.layers) if (!layer.urls || includeForeign) await put(layer);
    await put({ digest: image.manifestDigest, bytes: image.manifest });
    manifests.push({
      mediaType: image.mediaType,
      digest: image.manifestDigest,
      size: image.manifest.length,
      annotations: { "org.opencontainers.image.ref.name": tag },
    });
  }
  await writeFile(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await writeFile(join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests }));
}

/** Pushes an image over the distribution API (monolithic blob pushes), without any client tool. */
export async function pushImage(registryUrl: string, repository: string, tag: string, image: TestImage): Promise<void> {
  for (const blob of [image.config, ...image.layers.filter((l) => !l.urls)]) await pushBlob(registryUrl, repository, blob.bytes);
  const response = await fetch(`${registryUrl}/v2/${repository}/manifests/${tag}`, {
    method: "PUT",
    headers: { "Content-Type": image.mediaType },
    body: new Uint8Array(image.manifest),
  });
  if (response.status !== 201) throw new Error(`manifest push failed: ${response.status} ${await response.text()}`);
}

export async function pushBlob(registryUrl: string, repository: string, bytes: Buffer): Promise<string> {
  const digest = sha256(bytes);
  const response = await fetch(`${registryUrl}/v2/${repository}/blobs/uploads/?digest=${digest}`, {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream" },
    body: new Uint8Array(bytes),
  });
  if (response.status !== 201) throw new Error(`blob push failed: ${response.status} ${await response.text()}`);
  return digest;
}
