/**
 * A minimal upstream registry on loopback for mirror tests: serves the
 * manifests and blobs it is given, counts requests, and can misbehave
 * (wrong bytes, rate limits, slow bodies, redirects, required credentials).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createHash } from "node:crypto";

export interface FakeUpstreamOptions {
  /** Basic credentials the upstream requires ("user:password"); none: anonymous. */
  basic?: string;
}

export class FakeUpstream {
  readonly manifests = new Map<string, { body: Buffer; mediaType: string }>();
  readonly blobs = new Map<string, Buffer>();
  /** Requests per "METHOD path". */
  readonly requests = new Map<string, number>();
  /** Authorization headers received. */
  readonly authorizations: string[] = [];
  /** Blob digests to answer with these bytes instead (a lying upstream). */
  readonly corrupt = new Map<string, Buffer>();
  /** Bytes per chunk and delay between chunks for blob bodies. */
  pace = { chunk: 1024 * 1024, delayMs: 0 };
  /** Answer everything with 429 and this Retry-After. */
  rateLimit: string | null = null;
  /** Blob GETs answer 307 to this base URL + path. */
  redirectBlobsTo: string | null = null;
  private server: Server | null = null;
  url = "";
  host = "";

  constructor(private readonly options: FakeUpstreamOptions = {}) {}

  async start(host = "127.0.0.1"): Promise<this> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, host, resolve));
    const port = (this.server.address() as AddressInfo).port;
    this.host = `${host}:${port}`;
    this.url = `http://${this.host}`;
    return this;
  }

  addManifest(repository: string, reference: string, body: Buffer, mediaType = "application/vnd.oci.image.manifest.v1+json"): string {
    const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
    this.manifests.set(`${repository}:${reference}`, { body, mediaType });
    this.manifests.set(`${repository}:${digest}`, { body, mediaType });
    return digest;
  }

  addBlob(repository: string, bytes: Buffer): string {
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    this.blobs.set(`${repository}:${digest}`, bytes);
    return digest;
  }

  count(method: string, pathPart: string): number {
    let n = 0;
    for (const [key, value] of this.requests) if (key.startsWith(`${method} `) && key.includes(pathPart)) n += value;
    return n;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? "/").split("?")[0]!;
    const key = `${req.method} ${path}`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
    if (req.headers.authorization) this.authorizations.push(req.headers.authorization);
    if (this.rateLimit !== null) {
      res.writeHead(429, { "Retry-After": this.rateLimit, "Content-Type": "application/json" });
      res.end(JSON.stringify({ errors: [{ code: "TOOMANYREQUESTS", message: "slow down" }] }));
      return;
    }
    if (this.options.basic && req.headers.authorization !== `Basic ${Buffer.from(this.options.basic).toString("base64")}`) {
      res.writeHead(401, { "WWW-Authenticate": 'Basic realm="fake"', "Content-Type": "application/json" });
      res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "credentials required" }] }));
      return;
    }
    if (path === "/v2/" || path === "/v2") {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end("{}");
      return;
    }
    const manifest = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(path);
    if (manifest) {
      const entry = this.manifests.get(`${manifest[1]}:${decodeURIComponent(manifest[2]!)}`);
      if (!entry) return notFound(res, "MANIFEST_UNKNOWN");
      const digest = `sha256:${createHash("sha256").update(entry.body).digest("hex")}`;
      res.writeHead(200, { "Content-Type": entry.mediaType, "Content-Length": entry.body.length, "Docker-Content-Digest": digest });
      res.end(req.method === "HEAD" ? undefined : entry.body);
      return;
    }
    const tags = /^\/v2\/(.+)\/tags\/list$/.exec(path);
    if (tags) {
      const names = [...this.manifests.keys()].filter((k) => k.startsWith(`${tags[1]}:`) && !k.includes("sha256:")).map((k) => k.slice(tags[1]!.length + 1));
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ name: tags[1], tags: names }));
      return;
    }
    const blob = /^\/v2\/(.+)\/blobs\/([^/]+)$/.exec(path);
    if (blob) {
      const digest = decodeURIComponent(blob[2]!);
      const bytes = this.blobs.get(`${blob[1]}:${digest}`);
      if (!bytes) return notFound(res, "BLOB_UNKNOWN");
      if (this.redirectBlobsTo && req.method === "GET") {
        res.writeHead(307, { Location: `${this.redirectBlobsTo}${path}` });
        res.end();
        return;
      }
      const body = this.corrupt.get(digest) ?? bytes;
      res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": body.length, "Docker-Content-Digest": digest });
      if (req.method === "HEAD") {
        res.end();
        return;
      }
      void this.stream(res, body);
      return;
    }
    notFound(res, "NAME_UNKNOWN");
  }

  private async stream(res: ServerResponse, body: Buffer): Promise<void> {
    for (let offset = 0; offset < body.length && !res.destroyed; offset += this.pace.chunk) {
      if (!res.write(body.subarray(offset, offset + this.pace.chunk))) await new Promise((resolve) => res.once("drain", resolve));
      // Unref'd: a long pause must not keep the test process alive after the server closed.
      if (this.pace.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.pace.delayMs).unref());
    }
    res.end();
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server?.close(() => resolve());
      this.server?.closeAllConnections();
    });
  }
}

function notFound(res: ServerResponse, code: string): void {
  res.writeHead(404, { "Content-Type": "application/json" });
  res.end(JSON.stringify({ errors: [{ code, message: "not found" }] }));
}

/** An OCI image manifest over a config and layers given as digests and sizes. */
export function imageManifest(config: { digest: string; size: number }, layers: Array<{ digest: string; size: number; urls?: string[]; mediaType?: string }>): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
      layers: layers.map((l) => ({ mediaType: l.mediaType ?? "application/vnd.oci.image.layer.v1.tar+gzip", digest: l.digest, size: l.size, ...(l.urls ? { urls: l.urls } : {}) })),
    }),
  );
}
