/**
 * `docker save` tarballs (docker-archive): `manifest.json` is
 * `[{"Config": "<file>", "RepoTags": [...], "Layers": ["<file>", ...],
 * "LayerSources": {"<diff_id>": <descriptor>}}]`. Reading synthesizes a Docker
 * schema 2 manifest over the config and layer files as they are (no
 * recompression, so the config digest and diff_ids stay true); LayerSources
 * brings back foreign-layer descriptors (`urls`), as Docker records them.
 * Writing stages verified blobs in a temporary directory and packs the tar at
 * commit, since a tar member's size must precede its bytes.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, open, readFile, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import { digestOf, parseDigest } from "../oci/digest.js";
import { parseManifest, type Descriptor } from "../oci/manifest.js";
import { DOCKER_MANIFEST, OCI_MANIFEST } from "../oci/media-types.js";
import { isForeign } from "./foreign.js";
import type { BlobCandidate, ImageDestination, ImageSource, ManifestData } from "./image.js";
import { indexTar, type TarMember } from "./tar-index.js";
import { dockerLayerType, ociLayerType } from "./layer-media-types.js";

export const DOCKER_CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd";

interface ArchiveEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
  LayerSources?: Record<string, Descriptor>;
}

export class DockerArchiveSource implements ImageSource {
  readonly name: string;
  private members?: Map<string, TarMember>;
  private built?: { manifest: ManifestData; files: Map<string, TarMember> };

  constructor(
    private readonly file: string,
    /** Picks the image whose RepoTags has this name:tag; the first image otherwise. */
    private readonly tag?: string,
  ) {
    this.name = `docker-archive:${file}`;
  }

  private async member(name: string): Promise<TarMember> {
    this.members ??= await indexTar(this.file);
    const member = this.members.get(name.replace(/^\.?\/+/, ""));
    if (!member) throw new Error(`${this.name}: the archive has no ${name}`);
    return member;
  }

  private async readMember(name: string): Promise<Buffer> {
    const member = await this.member(name);
    const handle = await open(this.file, "r");
    try {
      const buffer = Buffer.alloc(member.size);
      await handle.read(buffer, 0, member.size, member.offset);
      return buffer;
    } finally {
      await handle.close();
    }
  }

  private async entry(): Promise<ArchiveEntry> {
    const entries = JSON.parse((await this.readMember("manifest.json")).toString("utf8")) as ArchiveEntry[];
    if (!Array.isArray(entries) || entries.length === 0) throw new Error(`${this.name}: manifest.json lists no image`);
    if (!this.tag) return entries[0]!;
    const found = entries.find((e) => e.RepoTags?.some((t) => t === this.tag || t.endsWith(`/${this.tag}`)));
    if (!found) throw new Error(`${this.name}: no image tagged ${this.tag}`);
    return found;
  }

  async rootManifest(): Promise<ManifestData> {
    if (this.built) return this.built.manifest;
    const entry = await this.entry();
    const configBytes = await this.readMember(entry.Config);
    const config = JSON.parse(configBytes.toString("utf8")) as { rootfs?: { diff_ids?: string[] } };
    const diffIds = config.rootfs?.diff_ids ?? [];
    const files = new Map<string, TarMember>();
    let layers: Descriptor[] = [];
    for (const [i, path] of entry.Layers.entries()) {
      const member = await this.member(path);
      const known = entry.LayerSources?.[diffIds[i] ?? ""];
      const { digest, magic } = await this.hashMember(member);
      if (known && known.digest === digest) {
        layers.push(known);
      } else {
        const mediaType = isGzip(magic) ? DOCKER_LAYER_GZIP : isZstd(magic) ? OCI_LAYER_ZSTD : DOCKER_LAYER_TAR;
        layers.push({ mediaType, digest, size: member.size });
      }
      files.set(digest, member);
    }
    const configDigest = digestOf(configBytes);
    files.set(configDigest, await this.member(entry.Config));
    // One format throughout: Docker schema 2 unless a layer has no Docker type (zstd), then OCI.
    const oci = layers.some((layer) => dockerLayerType(layer.mediaType) === undefined);
    layers = layers.map((layer) => ({ ...layer, mediaType: oci ? ociLayerType(layer.mediaType) : dockerLayerType(layer.mediaType)! }));
    const manifestObject = {
      schemaVersion: 2,
      mediaType: oci ? OCI_MANIFEST : DOCKER_MANIFEST,
      config: { mediaType: oci ? OCI_CONFIG : DOCKER_CONFIG_MEDIA_TYPE, digest: configDigest, size: configBytes.length },
      layers,
    };
    const bytes = Buffer.from(JSON.stringify(manifestObject, null, 3));
    this.built = { manifest: { bytes, mediaType: manifestObject.mediaType, digest: digestOf(bytes) }, files };
    return this.built.manifest;
  }

  private async hashMember(member: TarMember): Promise<{ digest: string; magic: Buffer }> {
    const hash = createHash("sha256");
    let magic: Buffer | undefined;
    if (member.size > 0) {
      for await (const chunk of createReadStream(this.file, { start: member.offset, end: member.offset + member.size - 1, highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
        magic ??= chunk.subarray(0, 4);
        hash.update(chunk);
      }
    }
    return { digest: `sha256:${hash.digest("hex")}`, magic: magic ?? Buffer.alloc(0) };
  }

  async manifest(descriptor: Descriptor): Promise<ManifestData> {
    throw new Error(`${this.name} holds a single image; it has no manifest ${descriptor.digest}`);
  }

  blobCandidates(descriptor: Descriptor): BlobCandidate[] {
    const member = this.built?.files.get(descriptor.digest);
    if (!member) return [];
    return [
      {
        name: this.name,
        open: async () =>
          member.size === 0
            ? createReadStream(this.file, { start: 1, end: 0 })
            : createReadStream(this.file, { start: member.offset, end: member.offset + member.size - 1, highWaterMark: 1024 * 1024 }),
      },
    ];
  }

  async close(): Promise<void> {}
}

function isGzip(magic: Buffer): boolean {
  return magic.length >= 2 && magic[0] === 0x1f && magic[1] === 0x8b;
}

function isZstd(magic: Buffer): boolean {
  return magic.length >= 4 && magic.readUInt32LE(0) === 0xfd2fb528;
}

export class DockerArchiveDestination implements ImageDestination {
  readonly name: string;
  readonly storesForeignBytes = true;
  readonly singleImage = true;
  private stage?: Promise<string>;
  private root?: ManifestData;

  constructor(
    private readonly file: string,
    private readonly repoTags: string[] = [],
  ) {
    this.name = `docker-archive:${file}`;
  }

  /** One staging directory, created once even when parallel blob jobs ask at the same time. */
  private stageDir(): Promise<string> {
    this.stage ??= mkdtemp(join(tmpdir(), "ferry-archive-"));
    return this.stage;
  }

  async hasBlob(): Promise<boolean> {
    return false;
  }

  async putBlob(descriptor: Descriptor, stream: Readable): Promise<void> {
    const path = join(await this.stageDir(), parseDigest(descriptor.digest).encoded);
    try {
      await pipeline(stream, createWriteStream(path));
    } catch (error) {
      await rm(path, { force: true });
      throw error;
    }
  }

  async putManifest(manifest: ManifestData, root: boolean): Promise<void> {
    const parsed = parseManifest(manifest.bytes, manifest.mediaType);
    if (parsed.kind !== "image") throw new Error(`${this.name}: a docker archive holds one image, not an index; choose one with --platform`);
    if (root) this.root = manifest;
  }

  async commit(): Promise<void> {
    if (!this.root) throw new Error(`${this.name}: nothing to write`);
    const stage = await this.stageDir();
    const parsed = parseManifest(this.root.bytes, this.root.mediaType);
    const config = parsed.config!;
    const configBytes = await readFile(join(stage, parseDigest(config.digest).encoded));
    const diffIds = (JSON.parse(configBytes.toString("utf8")) as { rootfs?: { diff_ids?: string[] } }).rootfs?.diff_ids ?? [];
    const configName = `${parseDigest(config.digest).encoded}.json`;
    const layerNames = parsed.layers.map((layer) => `${parseDigest(layer.digest).encoded}.tar`);
    const entry: ArchiveEntry = { Config: configName, RepoTags: this.repoTags, Layers: layerNames };
    const sources: Record<string, Descriptor> = {};
    parsed.layers.forEach((layer, i) => {
      // As `docker save` records them: with Docker media types where Docker has one.
      if (isForeign(layer) && diffIds[i]) sources[diffIds[i]!] = { ...layer, mediaType: dockerLayerType(layer.mediaType) ?? layer.mediaType };
    });
    if (Object.keys(sources).length > 0) entry.LayerSources = sources;

    const pack = tar.pack();
    const temp = `${this.file}.${process.pid}.tmp`;
    const written = pipeline(pack, createWriteStream(temp));
    const add = async (name: string, path: string, size: number) => {
      await pipeline(createReadStream(path), pack.entry({ name, size, mode: 0o644, mtime: new Date(0) }));
    };
    try {
      await add(configName, join(stage, parseDigest(config.digest).encoded), config.size);
      const seen = new Set<string>();
      for (const [i, layer] of parsed.layers.entries()) {
        if (seen.has(layerNames[i]!)) continue;
        seen.add(layerNames[i]!);
        await add(layerNames[i]!, join(stage, parseDigest(layer.digest).encoded), layer.size);
      }
      const manifestJson = Buffer.from(JSON.stringify([entry]));
      pack.entry({ name: "manifest.json", size: manifestJson.length, mode: 0o644, mtime: new Date(0) }, manifestJson);
      pack.finalize();
      await written;
      await rename(temp, this.file);
    } catch (error) {
      pack.destroy();
      await rm(temp, { force: true });
      throw error;
    } finally {
      await rm(stage, { recursive: true, force: true });
      this.stage = undefined;
    }
  }

  async abort(): Promise<void> {
    if (this.stage) await rm(await this.stage, { recursive: true, force: true });
    this.stage = undefined;
  }
}
