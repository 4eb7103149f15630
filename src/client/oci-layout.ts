/**
 * OCI image layout (image-spec "image-layout.md"): `oci-layout`, `index.json`,
 * `blobs/<alg>/<encoded>`. `oci:DIR:TAG` names the index.json entry whose
 * `org.opencontainers.image.ref.name` annotation is TAG (as skopeo does).
 * Blobs are written to a temporary file and renamed into place only after
 * their digest and size checked out.
 */
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { digestOf, parseDigest } from "../oci/digest.js";
import type { Descriptor } from "../oci/manifest.js";
import { OCI_INDEX } from "../oci/media-types.js";
import { openForeignUrl } from "./foreign.js";
import type { BlobCandidate, ImageDestination, ImageSource, ManifestData } from "./image.js";

export const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";

interface LayoutIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  [key: string]: unknown;
}

export function blobPath(dir: string, digest: string): string {
  const { algorithm, encoded } = parseDigest(digest);
  return join(dir, "blobs", algorithm, encoded);
}

async function readIndex(dir: string): Promise<LayoutIndex> {
  const text = await readFile(join(dir, "index.json"), "utf8").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") throw new Error(`${dir} is not an OCI image layout (no index.json)`);
    throw error;
  });
  const index = JSON.parse(text) as LayoutIndex;
  if (!Array.isArray(index.manifests)) throw new Error(`${dir}/index.json has no manifests array`);
  return index;
}

export class OciLayoutSource implements ImageSource {
  readonly name: string;

  constructor(
    private readonly dir: string,
    private readonly tag?: string,
  ) {
    this.name = `oci:${dir}${tag ? `:${tag}` : ""}`;
  }

  async rootManifest(): Promise<ManifestData> {
    const index = await readIndex(this.dir);
    const entries = this.tag
      ? index.manifests.filter((m) => m.annotations?.[REF_NAME_ANNOTATION] === this.tag)
      : index.manifests;
    if (entries.length === 0) {
      const names = index.manifests.map((m) => m.annotations?.[REF_NAME_ANNOTATION]).filter(Boolean);
      throw new Error(`${this.name}: no image tagged "${this.tag}" (tags: ${names.join(", ") || "none"})`);
    }
    if (entries.length > 1) {
      throw new Error(`${this.name}: index.json lists ${entries.length} images; name one with oci:DIR:TAG`);
    }
    return this.manifest(entries[0]!);
  }

  async manifest(descriptor: Descriptor): Promise<ManifestData> {
    const bytes = await readFile(blobPath(this.dir, descriptor.digest));
    const digest = digestOf(bytes, parseDigest(descriptor.digest).algorithm);
    if (digest !== descriptor.digest) throw new Error(`${this.name}: blob ${descriptor.digest} is corrupt (its content hashes to ${digest})`);
    return { bytes, mediaType: descriptor.mediaType, digest };
  }

  blobCandidates(descriptor: Descriptor): BlobCandidate[] {
    const path = blobPath(this.dir, descriptor.digest);
    const local: BlobCandidate = {
      name: `layout ${this.dir}`,
      quietWhenMissing: (descriptor.urls?.length ?? 0) > 0,
      open: async () => {
        await stat(path);
        return createReadStream(path, { highWaterMark: 1024 * 1024 });
      },
    };
    // A layout may hold a foreign layer's bytes, or only its descriptor.
    const remote = (descriptor.urls ?? []).map((url) => ({ name: url, open: () => openForeignUrl(url) }));
    return [local, ...remote];
  }

  async close(): Promise<void> {}
}

export class OciLayoutDestination implements ImageDestination {
  readonly name: string;
  readonly storesForeignBytes = true;
  readonly singleImage = false;
  private root?: Descriptor;

  constructor(
    private readonly dir: string,
    private readonly tag?: string,
  ) {
    this.name = `oci:${dir}${tag ? `:${tag}` : ""}`;
  }

  async hasBlob(descriptor: Descriptor): Promise<boolean> {
    try {
      const info = await stat(blobPath(this.dir, descriptor.digest));
      return info.size === descriptor.size;
    } catch {
      return false;
    }
  }

  async putBlob(descriptor: Descriptor, stream: Readable): Promise<void> {
    const path = blobPath(this.dir, descriptor.digest);
    await mkdir(join(path, ".."), { recursive: true });
    const temp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.part`;
    try {
      // A large buffer lets the stream batch network chunks into few writev calls.
      await pipeline(stream, createWriteStream(temp, { highWaterMark: 4 * 1024 * 1024 }));
      await rename(temp, path);
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
  }

  async putManifest(manifest: ManifestData, root: boolean): Promise<void> {
    const path = blobPath(this.dir, manifest.digest);
    await mkdir(join(path, ".."), { recursive: true });
    await writeFile(path, manifest.bytes);
    if (root) this.root = { mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.bytes.length };
  }

  async commit(): Promise<void> {
    if (!this.root) return;
    await mkdir(this.dir, { recursive: true });
    await writeFile(join(this.dir, "oci-layout"), `${JSON.stringify({ imageLayoutVersion: "1.0.0" })}\n`);
    let index: LayoutIndex;
    try {
      index = await readIndex(this.dir);
    } catch {
      index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] };
    }
    const entry: Descriptor = { ...this.root };
    if (this.tag) entry.annotations = { [REF_NAME_ANNOTATION]: this.tag };
    // One entry per tag; an untagged write replaces the untagged entry with the same digest.
    index.manifests = index.manifests.filter((m) =>
      this.tag ? m.annotations?.[REF_NAME_ANNOTATION] !== this.tag : m.digest !== entry.digest || m.annotations?.[REF_NAME_ANNOTATION] !== undefined,
    );
    index.manifests.push(entry);
    const temp = join(this.dir, `index.json.${process.pid}.tmp`);
    await writeFile(temp, `${JSON.stringify(index, null, 2)}\n`);
    await rename(temp, join(this.dir, "index.json"));
  }

  async abort(): Promise<void> {}
}
