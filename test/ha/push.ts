/**
 * A well-behaved registry client for the HA tests: pushes an image in chunks
 * (each PATCH may land on another replica) and, like skopeo or the Ferry
 * client, starts a blob over when the registry fails it (a connection reset,
 * 5xx, a session another replica no longer knows). Counts what it retried,
 * and remembers interrupted sessions so a test can prove none is wedged.
 */
import { createHash, randomBytes } from "node:crypto";

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";

export interface PushStats {
  retries: number;
  /** Upload session URLs a failure interrupted (the test checks each can be continued or cancelled). */
  interrupted: Set<string>;
  /** Epoch ms of every failed request. */
  failures: number[];
}

export function newStats(): PushStats {
  return { retries: 0, interrupted: new Set(), failures: [] };
}

export interface Image {
  repository: string;
  tag: string;
  blobs: Buffer[];
  manifest: Buffer;
  manifestDigest: string;
}

export function sha256(bytes: Buffer): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** A config and `layers` random layers of `layerBytes` each. */
export function randomImage(repository: string, tag: string, layers: number, layerBytes: number): Image {
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", seed: randomBytes(8).toString("hex") }));
  const layerBlobs = Array.from({ length: layers }, () => randomBytes(layerBytes));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
      layers: layerBlobs.map((b) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: sha256(b), size: b.length })),
    }),
  );
  return { repository, tag, blobs: [config, ...layerBlobs], manifest, manifestDigest: sha256(manifest) };
}

class Retry extends Error {}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function send(url: string, init: RequestInit, stats: PushStats): Promise<Response> {
  try {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(30_000) });
    if (response.status >= 500) {
      await response.arrayBuffer().catch(() => undefined);
      throw new Retry(`${init.method ?? "GET"} ${response.status}`);
    }
    return response;
  } catch (error) {
    stats.failures.push(Date.now());
    throw error instanceof Retry ? error : new Retry(String(error));
  }
}

/** One chunked blob upload: POST, PATCHes of `chunkBytes`, PUT with the digest. */
async function uploadBlob(base: string, repository: string, bytes: Buffer, chunkBytes: number, stats: PushStats): Promise<void> {
  const started = await send(`${base}/v2/${repository}/blobs/uploads/`, { method: "POST" }, stats);
  if (started.status !== 202) throw new Error(`POST upload: ${started.status} ${await started.text()}`);
  let location = new URL(started.headers.get("location")!, base).href;
  const session = location;
  try {
    for (let offset = 0; offset < bytes.length; offset += chunkBytes) {
      const chunk = bytes.subarray(offset, Math.min(offset + chunkBytes, bytes.length));
      const patched = await send(
        location,
        {
          method: "PATCH",
          headers: { "Content-Type": "application/octet-stream", "Content-Range": `${offset}-${offset + chunk.length - 1}` },
          body: new Uint8Array(chunk),
        },
        stats,
      );
      // 404: the session is gone; 416: another writer, or bytes a dead replica took: start over.
      if (patched.status === 404 || patched.status === 416) throw new Retry(`PATCH ${patched.status}`);
      if (patched.status !== 202) throw new Error(`PATCH: ${patched.status} ${await patched.text()}`);
      location = new URL(patched.headers.get("location")!, base).href;
    }
    const url = new URL(location);
    url.searchParams.set("digest", sha256(bytes));
    const done = await send(url.href, { method: "PUT" }, stats);
    if (done.status === 404 || done.status === 416) throw new Retry(`PUT ${done.status}`);
    if (done.status !== 201) throw new Error(`PUT blob: ${done.status} ${await done.text()}`);
  } catch (error) {
    if (error instanceof Retry) stats.interrupted.add(session);
    throw error;
  }
}

/**
 * Pushes every blob (retrying each until it lands) and then the manifest; resolves once the
 * registry acknowledged the manifest with 201. A manifest refused because a blob is gone
 * (garbage collection took it before the manifest came) pushes the blobs again.
 */
export async function pushWithRetries(base: string, image: Image, stats: PushStats, options: { chunkBytes?: number; attempts?: number } = {}): Promise<void> {
  const attempts = options.attempts ?? 40;
  const chunkBytes = options.chunkBytes ?? 64 * 1024;
  for (let attempt = 1; ; attempt++) {
    try {
      for (const blob of image.blobs) {
        const head = await send(`${base}/v2/${image.repository}/blobs/${sha256(blob)}`, { method: "HEAD" }, stats);
        if (head.status === 200) continue;
        await uploadBlob(base, image.repository, blob, chunkBytes, stats);
      }
      const put = await send(
        `${base}/v2/${image.repository}/manifests/${image.tag}`,
        { method: "PUT", headers: { "Content-Type": OCI_MANIFEST }, body: new Uint8Array(image.manifest) },
        stats,
      );
      if (put.status === 400 && (await put.clone().text()).includes("MANIFEST_BLOB_UNKNOWN")) throw new Retry("blob collected before its manifest");
      if (put.status !== 201) throw new Error(`PUT manifest: ${put.status} ${await put.text()}`);
      if (put.headers.get("docker-content-digest") !== image.manifestDigest) throw new Error("manifest digest changed");
      return;
    } catch (error) {
      if (!(error instanceof Retry) || attempt >= attempts) throw error;
      stats.retries++;
      await sleep(Math.min(50 * attempt, 500));
    }
  }
}

/** Whether the image as pulled by tag is byte for byte the one pushed, every blob digest-verified. */
export async function pulledIntact(base: string, image: Image): Promise<boolean> {
  const manifest = await fetch(`${base}/v2/${image.repository}/manifests/${image.tag}`, { headers: { Accept: OCI_MANIFEST } });
  if (manifest.status !== 200) return false;
  if (!Buffer.from(await manifest.arrayBuffer()).equals(image.manifest)) return false;
  for (const blob of image.blobs) {
    const response = await fetch(`${base}/v2/${image.repository}/blobs/${sha256(blob)}`);
    if (response.status !== 200) return false;
    if (sha256(Buffer.from(await response.arrayBuffer())) !== sha256(blob)) return false;
  }
  return true;
}
