/**
 * Foreign layers on the client side (FEDERATION.md §4.10). Their `urls` are
 * fetched with NO credentials of any kind: a dedicated HTTP agent, no
 * Authorization header, redirects followed by hand (http/https only). The
 * caller verifies digest and size (VerifyingStream).
 */
import type { IncomingHttpHeaders, IncomingMessage } from "node:http";
import type { Readable } from "node:stream";
import { AgentPool, discard } from "./http.js";
import { DOCKER_FOREIGN_LAYER, isNonDistributableMediaType } from "../oci/media-types.js";
import type { Descriptor } from "../oci/manifest.js";
import { SourceError, errorMessage } from "./errors.js";
import { VerifyingStream } from "./verify.js";

/** Its own connections: nothing of the registry's (credentials, sockets) is shared with foreign hosts. */
const foreignPool = new AgentPool({ maxSockets: 8, connectTimeoutMs: 10_000 });

export async function closeForeignConnections(): Promise<void> {
  foreignPool.destroy();
}

/** A layer the push side must not upload: its descriptor says where else it lives. */
export function isForeign(descriptor: Descriptor): boolean {
  return (descriptor.urls?.length ?? 0) > 0;
}

/** The distributable media type with the same content (for --include-foreign). */
export function distributableMediaType(mediaType: string): string {
  if (mediaType === DOCKER_FOREIGN_LAYER) return "application/vnd.docker.image.rootfs.diff.tar.gzip";
  if (isNonDistributableMediaType(mediaType)) return mediaType.replace(".nondistributable.", ".");
  return mediaType;
}

async function requestNoCredentials(url: string, method: "GET" | "HEAD"): Promise<{ status: number; headers: IncomingHttpHeaders; body: IncomingMessage }> {
  let current = new URL(url);
  for (let hop = 0; hop <= 5; hop++) {
    if (current.protocol !== "http:" && current.protocol !== "https:") {
      throw new SourceError(`${current.protocol} URLs are not fetched (only http and https)`);
    }
    const response = await foreignPool.send({
      method,
      url: current,
      headers: { "user-agent": "ferry-client/0.1", accept: "*/*" },
      idleTimeoutMs: 60_000,
    });
    const location = response.headers.location;
    if (response.status >= 300 && response.status < 400 && typeof location === "string") {
      await discard(response.body);
      current = new URL(location, current);
      continue;
    }
    return response;
  }
  throw new SourceError("too many redirects");
}

/** Opens one foreign URL for reading; throws SourceError naming the failure. */
export async function openForeignUrl(url: string): Promise<Readable> {
  let response;
  try {
    response = await requestNoCredentials(url, "GET");
  } catch (error) {
    throw error instanceof SourceError ? error : new SourceError(errorMessage(error), { cause: error });
  }
  if (response.status !== 200) {
    await discard(response.body);
    throw new SourceError(`HTTP ${response.status}`);
  }
  return response.body;
}

export interface UrlCheck {
  url: string;
  ok: boolean;
  status?: number;
  size?: number;
  /** Present with --verify: the digest of what was served. */
  digest?: string;
  error?: string;
}

/** HEAD (and with `verify`, GET and hash) one foreign URL of a layer. */
export async function checkForeignUrl(descriptor: Descriptor, url: string, verify: boolean): Promise<UrlCheck> {
  try {
    if (verify) {
      const body = await openForeignUrl(url);
      const verifier = new VerifyingStream(descriptor.digest, descriptor.size);
      body.on("error", (error) => verifier.destroy(error));
      body.pipe(verifier);
      for await (const _chunk of verifier) {
        // drain: the verifier checks size and digest at the end
      }
      return { url, ok: true, status: 200, size: descriptor.size, digest: descriptor.digest };
    }
    const response = await requestNoCredentials(url, "HEAD");
    await discard(response.body);
    const length = response.headers["content-length"];
    const size = typeof length === "string" ? Number(length) : undefined;
    if (response.status !== 200) return { url, ok: false, status: response.status, error: `HTTP ${response.status}` };
    if (size !== undefined && size !== descriptor.size) {
      return { url, ok: false, status: 200, size, error: `size mismatch: expected ${descriptor.size} bytes, the server says ${size}` };
    }
    return { url, ok: true, status: 200, ...(size === undefined ? {} : { size }) };
  } catch (error) {
    return { url, ok: false, error: errorMessage(error) };
  }
}
