/**
 * The client library's front door: image locations as the CLI takes them
 * (`oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:NAME:TAG]`,
 * `[docker://]host/repo:tag`, see location.ts), registry clients with stored
 * or given credentials and TLS settings, and inspect / foreign check.
 */
import { formatImageReference, manifestReferenceOf, type ImageReference } from "../oci/image-reference.js";
import { parseManifest, type Descriptor, type ParsedManifest } from "../oci/manifest.js";
import type { Credentials } from "./credentials.js";
import type { UrlCheck } from "./foreign.js";
import type { ImageDestination, ImageSource, ManifestData } from "./image.js";
import type { RegistryClient } from "./registry.js";
import { connect } from "./connect.js";
import { destroyAllPools, type TlsSettings } from "./http.js";
import type { ImageLocation } from "./location.js";

export { parseLocation, type ImageLocation } from "./location.js";

export { copyImage, selectPlatform, type CopyOptions, type CopyResult } from "./copy.js";
export { RegistryClient } from "./registry.js";

/** Lets a CLI process exit without waiting for idle keep-alive connections to time out (registry and foreign hosts). */
export async function closeAllConnections(): Promise<void> {
  destroyAllPools();
}
export * from "./image.js";

export interface ClientContext {
  /** Plain HTTP for every registry (loopback hosts use HTTP unless TLS settings are given). */
  insecure?: boolean;
  /** Docker config.json path (default $DOCKER_CONFIG or ~/.docker); `--authfile`. */
  configPath?: string;
  /** Credentials for every registry this client talks to, instead of the stored ones (`--creds`). */
  credentials?: Credentials;
  /** HTTPS settings (`--tls-verify=false`, `--ca-file`, client certificates); implies HTTPS even on loopback. */
  tls?: TlsSettings;
  /** The registry's `Warning` headers (e.g. federation's warn mode). */
  onWarning?: (registry: string, text: string) => void;
  /** Upload chunk size (bytes). */
  chunkSize?: number;
}

export class Client {
  private readonly clients = new Map<string, Promise<RegistryClient>>();

  constructor(readonly context: ClientContext = {}) {}

  /** A client for a registry host with the stored credentials, if any. */
  registry(host: string): Promise<RegistryClient> {
    let client = this.clients.get(host);
    if (!client) {
      client = connect(host, this.context);
      this.clients.set(host, client);
    }
    return client;
  }

  async source(location: ImageLocation): Promise<ImageSource> {
    switch (location.kind) {
      case "oci":
        return new (await import("./oci-layout.js")).OciLayoutSource(location.dir, location.tag);
      case "docker-archive": {
        // Loaded on demand: tar-stream is not needed by registry and layout transfers.
        const { DockerArchiveSource } = await import("./docker-archive.js");
        return new DockerArchiveSource(location.file, location.tag);
      }
      case "oci-archive": {
        const { OciArchiveSource } = await import("./oci-archive.js");
        return new OciArchiveSource(location.file, location.tag);
      }
      case "registry":
        return new (await import("./registry-image.js")).RegistrySource(await this.registry(location.ref.registry), location.ref);
    }
  }

  async destination(location: ImageLocation, repoTags: string[] = []): Promise<ImageDestination> {
    switch (location.kind) {
      case "oci":
        return new (await import("./oci-layout.js")).OciLayoutDestination(location.dir, location.tag);
      case "docker-archive": {
        const { DockerArchiveDestination } = await import("./docker-archive.js");
        return new DockerArchiveDestination(location.file, location.tag ? [location.tag] : repoTags);
      }
      case "oci-archive": {
        const { OciArchiveDestination } = await import("./oci-archive.js");
        return new OciArchiveDestination(location.file, location.tag);
      }
      case "registry":
        return new (await import("./registry-image.js")).RegistryDestination(await this.registry(location.ref.registry), location.ref, this.context.chunkSize);
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
    const { checkForeignUrl, isForeign } = await import("./foreign.js");
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
