/**
 * `oci-archive:FILE[:TAG]`: a tar of an OCI image layout (what skopeo and
 * buildah write). Reading indexes the tar once and streams blobs straight
 * out of it (no extraction); writing builds a layout in a temporary
 * directory, with the same verification as `oci:`, and packs it into FILE at
 * commit (renamed into place, so a failed copy leaves no half archive).
 */
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, open, readdir, rename, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import { digestOf, parseDigest } from "../oci/digest.js";
import type { Descriptor } from "../oci/manifest.js";
import { NotFoundError } from "./errors.js";
import { openForeignUrl } from "./foreign.js";
import type { BlobCandidate, ImageDestination, ImageSource, ManifestData } from "./image.js";
import { OciLayoutDestination, REF_NAME_ANNOTATION } from "./oci-layout.js";
import { indexTar, type TarMember } from "./tar-index.js";

export class OciArchiveSource implements ImageSource {
  readonly name: string;
  private members?: Map<string, TarMember>;

  constructor(
    private readonly file: string,
    private readonly tag?: string,
  ) {
    this.name = `oci-archive:${file}${tag ? `:${tag}` : ""}`;
  }

  private async member(name: string): Promise<TarMember | undefined> {
    this.members ??= await indexTar(this.file);
    return this.members.get(name);
  }

  private async read(name: string): Promise<Buffer> {
    const member = await this.member(name);
    if (!member) throw new NotFoundError(`${this.name}: the archive has no ${name} (is it an OCI layout tar?)`);
    const handle = await open(this.file, "r");
    try {
      const buffer = Buffer.alloc(member.size);
      await handle.read(buffer, 0, member.size, member.offset);
      return buffer;
    } finally {
      await handle.close();
    }
  }

  async rootManifest(): Promise<ManifestData> {
    const index = JSON.parse((await this.read("index.json")).toString("utf8")) as { manifests?: Descriptor[] };
    const manifests = Array.isArray(index.manifests) ? index.manifests : [];
    const entries = this.tag ? manifests.filter((m) => m.annotations?.[REF_NAME_ANNOTATION] === this.tag) : manifests;
    if (entries.length === 0) {
      const names = manifests.map((m) => m.annotations?.[REF_NAME_ANNOTATION]).filter(Boolean);
      throw new NotFoundError(`${this.name}: no image tagged "${this.tag ?? ""}" (tags: ${names.join(", ") || "none"})`);
    }
    if (entries.length > 1) throw new NotFoundError(`${this.name}: index.json lists ${entries.length} images; name one with oci-archive:FILE:TAG`);
    return this.manifest(entries[0]!);
  }

  async manifest(descriptor: Descriptor): Promise<ManifestData> {
    const { algorithm, encoded } = parseDigest(descriptor.digest);
    const bytes = await this.read(`blobs/${algorithm}/${encoded}`);
    const digest = digestOf(bytes, algorithm);
    if (digest !== descriptor.digest) throw new Error(`${this.name}: blob ${descriptor.digest} is corrupt (its content hashes to ${digest})`);
    return { bytes, mediaType: descriptor.mediaType, digest };
  }

  blobCandidates(descriptor: Descriptor): BlobCandidate[] {
    const { algorithm, encoded } = parseDigest(descriptor.digest);
    const local: BlobCandidate = {
      name: this.name,
      quietWhenMissing: (descriptor.urls?.length ?? 0) > 0,
      open: async (): Promise<Readable> => {
        const member = await this.member(`blobs/${algorithm}/${encoded}`);
        if (!member) throw Object.assign(new Error(`${this.name} has no blob ${descriptor.digest}`), { code: "ENOENT" });
        if (member.size === 0) return createReadStream(this.file, { start: 1, end: 0 });
        return createReadStream(this.file, { start: member.offset, end: member.offset + member.size - 1, highWaterMark: 1024 * 1024 });
      },
    };
    const remote = (descriptor.urls ?? []).map((url) => ({ name: url, open: () => openForeignUrl(url) }));
    return [local, ...remote];
  }

  async close(): Promise<void> {}
}

export class OciArchiveDestination implements ImageDestination {
  readonly name: string;
  readonly storesForeignBytes = true;
  readonly singleImage = false;
  private stage?: Promise<{ dir: string; layout: OciLayoutDestination }>;

  constructor(
    private readonly file: string,
    private readonly tag?: string,
  ) {
    this.name = `oci-archive:${file}${tag ? `:${tag}` : ""}`;
  }

  private layout(): Promise<{ dir: string; layout: OciLayoutDestination }> {
    this.stage ??= mkdtemp(join(tmpdir(), "ferry-oci-archive-")).then((dir) => ({ dir, layout: new OciLayoutDestination(dir, this.tag) }));
    return this.stage;
  }

  async hasBlob(descriptor: Descriptor): Promise<boolean> {
    return (await this.layout()).layout.hasBlob(descriptor);
  }

  async putBlob(descriptor: Descriptor, stream: Readable): Promise<void> {
    await (await this.layout()).layout.putBlob(descriptor, stream);
  }

  async putManifest(manifest: ManifestData, root: boolean): Promise<void> {
    await (await this.layout()).layout.putManifest(manifest, root);
  }

  async commit(): Promise<void> {
    const { dir, layout } = await this.layout();
    try {
      await layout.commit();
      const pack = tar.pack();
      const temp = `${this.file}.${process.pid}.tmp`;
      const written = pipeline(pack, createWriteStream(temp));
      try {
        for (const name of await listFiles(dir)) {
          const path = join(dir, name);
          const { size } = await stat(path);
          await pipeline(createReadStream(path), pack.entry({ name, size, mode: 0o644, mtime: new Date(0) }));
        }
        pack.finalize();
        await written;
        await rename(temp, this.file);
      } catch (error) {
        pack.destroy();
        await rm(temp, { force: true });
        throw error;
      }
    } finally {
      await this.abort();
    }
  }

  async abort(): Promise<void> {
    if (this.stage) await rm((await this.stage).dir, { recursive: true, force: true });
    this.stage = undefined;
  }
}

/** Files under dir, relative, `oci-layout` and `index.json` first (as skopeo writes them). */
async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (relative: string): Promise<void> => {
    for (const entry of await readdir(join(dir, relative), { withFileTypes: true })) {
      const name = relative ? `${relative}/${entry.name}` : entry.name;
      if (entry.isDirectory()) await walk(name);
      else if (entry.isFile()) out.push(name);
    }
  };
  await walk("");
  const first = (name: string) => (name === "oci-layout" ? 0 : name === "index.json" ? 1 : 2);
  return out.sort((a, b) => first(a) - first(b) || a.localeCompare(b));
}
