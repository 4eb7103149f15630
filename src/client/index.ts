/**
 * The client library's front door: image locations as the CLI takes them
 * (`oci:DIR[:TAG]`, `docker-archive:FILE[:NAME:TAG]`, `[docker://]host/repo:tag`),
 * registry clients with stored credentials, and inspect / foreign check.
 */
import { parseImageReference, formatImageReference, manifestReferenceOf, type ImageReference } from "../oci/image-reference.js";
import { parseManifest, type Descriptor, type ParsedManifest } from "../oci/manifest.js";
import { isValidTag } from "../oci/reference.js";
import { getCredentials, dockerConfigPath } from "./credentials.js";
import { checkForeignUrl, isForeign, type UrlCheck } from "./foreign.js";
import type { ImageDestination, ImageSource, ManifestData } from "./image.js";
import { OciLayoutDestination, OciLayoutSource } from "./oci-layout.js";
import { RegistryClient } from "./registry.js";
import { RegistryDestination, RegistrySource } from "./registry-image.js";

export { copyImage, selectPlatform, type CopyOptions, type CopyResult } from "./copy.js";
export { RegistryClient } from "./registry.js";
import { closeConnections } from "./transport.js";
import { closeForeignConnections } from "./foreign.js";

/** Lets a CLI process exit without waiting for idle keep-alive connections to time out. */
export async function closeAllConnections(): Promise<void> {
  await Promise.all([closeConnections(), closeForeignConnections()]);
}
export * from "./image.js";

export type ImageLocation =
  | { kind: "oci"; dir: string; tag?: string }
  | { kind: "docker-archive"; file: string; tag?: string }
  | { kind: "registry"; ref: ImageReference };

export interface ClientContext {
  /** Plain HTTP for every registry (loopback hosts always use HTTP). */
  insecure?: boolean;
  /** Docker config.json path (default $DOCKER_CONFIG or ~/.docker). */
  configPath?: string;
  /** Upload chunk size (bytes). */
  chunkSize?: number;
}

export function parseLocation(value: string): ImageLocation {
  if (value.startsWith("oci:")) {
    const { path, tag } = splitTag(value.slice(4));
    return tag ? { kind: "oci", dir: path, tag } : { kind: "oci", dir: path };
  }
  if (value.startsWith("docker-archive:")) {
    const rest = value.slice("docker-archive:".length);
    // FILE or FILE:name:tag (skopeo's syntax); a bare FILE may itself contain no ':'.
    const first = rest.indexOf(":");
    if (first > 0) return { kind: "docker-archive", file: rest.slice(0, first), tag: rest.slice(first + 1) };
    return { kind: "docker-archive", file: rest };
  }
  const bare = value.startsWith("docker://") ? value.slice("docker://".length) : value;
  return { kind: "registry", ref: parseImageReference(bare) };
}

function splitTag(value: string): { path: string; tag?: string } {
  const colon = value.lastIndexOf(":");
  if (colon > 0 && !value.slice(colon + 1).includes("/") && isValidTag(value.slice(colon + 1))) {
    return { path: value.slice(0, colon), tag: value.slice(colon + 1) };
  }
  return { path: value };
}

export class Client {
  private readonly clients = new Map<string, Promise<RegistryClient>>();

  constructor(readonly context: ClientContext = {}) {}

  /** A client for a registry host with the stored credentials, if any. */
  registry(host: string): Promise<RegistryClient> {
    let client = this.clients.get(host);
    if (!client) {
      client = (async () => {
        const credentials = await getCredentials(host, this.context.configPath ?? dockerConfigPath());
        return new RegistryClient({ registry: host, insecure: this.context.insecure, ...(credentials ? { credentials } : {}) });
      })();
      this.clients.set(host, client);
    }
    return client;
  }

  async source(location: ImageLocation): Promise<ImageSource> {
    switch (location.kind) {
      case "oci":
        return new OciLayoutSource(location.dir, location.tag);
      case "docker-archive": {
        // Loaded on demand: tar-stream is not needed by registry and layout transfers.
        const { DockerArchiveSource } = await import("./docker-archive.js");
        return new DockerArchiveSource(location.file, location.tag);
      }
      case "registry":
        return new RegistrySource(await this.registry(location.ref.registry), location.ref);
    }
  }

  async destination(location: ImageLocation, repoTags: string[] = []): Promise<ImageDestination> {
    switch (location.kind) {
      case "oci":
        return new OciLayoutDestination(location.dir, location.tag);
      case "docker-archive": {
        const { DockerArchiveDestination } = await import("./docker-archive.js");
        return new DockerArchiveDestination(location.file, location.tag ? [location.tag] : repoTags);
      }
      case "registry":
        return new RegistryDestination(await this.registry(location.ref.registry), location.ref, this.context.chunkSize);
    }
  }

  async inspect(ref: ImageReference): Promise<Inspection> {
    const client = await this.registry(ref.registry);
    const manifest = await client.getManifest(ref.repository, manifestReferenceOf(ref));
    const parsed = parseManifest(manifest.bytes, manifest.mediaType);
    const inspection: Inspection = { reference: formatImageReference(ref), manifest, parsed };
    if (parsed.kind === "image" && parsed.config) {
      const stream = await client.openBlob(ref.repository, parsed.config.digest);
      const chunks: Buffer[] = [];
      for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
      try {
        inspection.config = JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown;
      } catch {
        inspection.config = undefined;
      }
    }
    return inspection;
  }

  /** Every foreign layer of an image (all platforms of an index) with the state of each URL. */
  async checkForeign(ref: ImageReference, verify: boolean): Promise<ForeignLayerCheck[]> {
    const client = await this.registry(ref.registry);
    const root = await client.getManifest(ref.repository, manifestReferenceOf(ref));
    const layers = new Map<string, Descriptor>();
    const collect = async (manifest: ManifestData): Promise<void> => {
      const parsed = parseManifest(manifest.bytes, manifest.mediaType);
      if (parsed.kind === "index") {
        for (const child of parsed.manifests) await collect(await client.getManifest(ref.repository, child.digest));
        return;
      }
      for (const layer of parsed.layers) if (isForeign(layer)) layers.set(layer.digest, layer);
    };
    await collect(root);
    const results: ForeignLayerCheck[] = [];
    for (const layer of layers.values()) {
      const urls = await Promise.all(layer.urls!.map((url) => checkForeignUrl(layer, url, verify)));
      results.push({ layer, urls, ok: urls.some((u) => u.ok) });
    }
    return results;
  }
}

export interface Inspection {
  reference: string;
  manifest: ManifestData;
  parsed: ParsedManifest;
  config?: unknown;
}

export interface ForeignLayerCheck {
  layer: Descriptor;
  urls: UrlCheck[];
  /** At least one URL serves the layer. */
  ok: boolean;
}
