/**
 * Test doubles for federation: real HTTP foreign sources on 127.0.0.1 that
 * can be told to go down, answer 404/500, redirect, send wrong bytes or
 * stall; and small registry helpers to push images with foreign layers.
 */
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { createHash, randomBytes } from "node:crypto";
import { verifySignedUrl } from "../../src/federation/signer.js";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";

export type Behaviour =
  | { kind: "ok" }
  | { kind: "status"; status: number }
  | { kind: "wrong-bytes" }
  | { kind: "short" }
  | { kind: "long" }
  | { kind: "stall"; afterBytes: number }
  | { kind: "redirect"; location: string; status?: number }
  | { kind: "no-length" };

export interface SourceRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
}

export class FakeSource {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly files = new Map<string, Buffer>();
  private readonly behaviours = new Map<string, Behaviour>();
  readonly requests: SourceRequest[] = [];
  connections = 0;
  port = 0;
  /** Delay before each response (ms), to let concurrent requests pile up. */
  delayMs = 0;
  /** Requests whose User-Agent matches get their connection dropped (a source only the registry may reach). */
  dropUserAgent: RegExp | null = null;
  /** Requests without a valid Ferry signature get their connection dropped (a CDN serving signed URLs only). */
  requireSignature: string | null = null;

  constructor(private readonly host = "127.0.0.1") {}

  get base(): string {
    return `http://${this.host.includes(":") ? `[${this.host}]` : this.host}:${this.port}`;
  }

  url(path: string): string {
    return `${this.base}${path}`;
  }

  put(path: string, bytes: Buffer): string {
    this.files.set(path, bytes);
    return this.url(path);
  }

  behave(path: string, behaviour: Behaviour): void {
    this.behaviours.set(path, behaviour);
  }

  gets(path?: string): number {
    return this.requests.filter((r) => r.method === "GET" && (path === undefined || r.path === path)).length;
  }

  async start(port = 0): Promise<this> {
    const server = createServer((req, res) => {
      this.requests.push({ method: req.method ?? "GET", path: req.url ?? "/", headers: req.headers });
      const unsigned = this.requireSignature !== null && !verifySignedUrl(`${this.base}${req.url}`, this.requireSignature).valid;
      if (unsigned || this.dropUserAgent?.test(req.headers["user-agent"] ?? "")) {
        req.socket.destroy();
        return;
      }
      const respond = () => this.respond(req.method ?? "GET", req.url ?? "/", res);
      if (this.delayMs > 0) setTimeout(respond, this.delayMs);
      else respond();
    });
    server.on("connection", (socket) => {
      this.connections++;
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(port, this.host, () => resolve()));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
    return this;
  }

  /** Stops listening: connections are refused until up(). */
  async down(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async up(): Promise<void> {
    await this.start(this.port);
  }

  close(): Promise<void> {
    return this.down();
  }

  private respond(method: string, path: string, res: ServerResponse): void {
    const bytes = this.files.get(path.split("?")[0]!);
    const behaviour = this.behaviours.get(path.split("?")[0]!) ?? { kind: "ok" };
    if (behaviour.kind === "status") return void res.writeHead(behaviour.status, { "Content-Length": 0 }).end();
    if (behaviour.kind === "redirect") return void res.writeHead(behaviour.status ?? 302, { Location: behaviour.location, "Content-Length": 0 }).end();
    if (!bytes) return void res.writeHead(404, { "Content-Length": 0 }).end();
    const head = method === "HEAD";
    switch (behaviour.kind) {
      case "ok":
        res.writeHead(200, { "Content-Length": bytes.length, "Content-Type": "application/octet-stream" });
        res.end(head ? undefined : bytes);
        return;
      case "no-length":
        res.writeHead(200, { "Content-Type": "application/octet-stream" });
        res.end(head ? undefined : bytes);
        return;
      case "wrong-bytes": {
        const wrong = Buffer.from(bytes);
        wrong[wrong.length - 1] = wrong[wrong.length - 1]! ^ 0xff;
        res.writeHead(200, { "Content-Length": wrong.length });
        res.end(head ? undefined : wrong);
        return;
      }
      case "short":
        res.writeHead(200, { "Content-Length": bytes.length - 1 });
        res.end(head ? undefined : bytes.subarray(0, bytes.length - 1));
        return;
      case "long": {
        const longer = Buffer.concat([bytes, Buffer.from("extra")]);
        res.writeHead(200);
        res.end(head ? undefined : longer);
        return;
      }
      case "stall":
        res.writeHead(200, { "Content-Length": bytes.length });
        if (!head) res.write(bytes.subarray(0, behaviour.afterBytes));
        return; // never ends
    }
  }
}

export function blob(size: number): { bytes: Buffer; digest: string; size: number } {
  const bytes = randomBytes(size);
  return { bytes, digest: sha256(bytes), size };
}

export function sha256(bytes: Buffer | string): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
export const DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

export interface ForeignLayer {
  digest: string;
  size: number;
  urls?: string[];
  mediaType?: string;
}

/** Uploads a blob with a monolithic POST+PUT. */
export async function pushBlob(registry: string, repository: string, bytes: Buffer): Promise<string> {
  const digest = sha256(bytes);
  const res = await fetch(`${registry}/v2/${repository}/blobs/uploads/?digest=${digest}`, {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream" },
    body: new Uint8Array(bytes),
  });
  if (res.status !== 201) throw new Error(`blob upload answered ${res.status}: ${await res.text()}`);
  return digest;
}

export interface PushResult {
  status: number;
  digest: string;
  body: string;
  headers: Headers;
  manifest: Buffer;
}

/** Pushes an image whose config is uploaded and whose layers are foreign. */
export async function pushForeignImage(
  registry: string,
  repository: string,
  tag: string,
  layers: ForeignLayer[],
  extraHeaders: Record<string, string> = {},
): Promise<PushResult> {
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }));
  const configDigest = await pushBlob(registry, repository, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: config.length },
      layers: layers.map((l) => ({ mediaType: l.mediaType ?? NONDISTRIBUTABLE, digest: l.digest, size: l.size, ...(l.urls ? { urls: l.urls } : {}) })),
    }),
  );
  return putManifest(registry, repository, tag, manifest, OCI_MANIFEST, extraHeaders);
}

export async function putManifest(
  registry: string,
  repository: string,
  reference: string,
  manifest: Buffer,
  mediaType: string,
  extraHeaders: Record<string, string> = {},
): Promise<PushResult> {
  const res = await fetch(`${registry}/v2/${repository}/manifests/${reference}`, {
    method: "PUT",
    headers: { "Content-Type": mediaType, ...extraHeaders },
    body: new Uint8Array(manifest),
  });
  return { status: res.status, digest: sha256(manifest), body: await res.text(), headers: res.headers, manifest };
}

export interface ErrorBody {
  errors: Array<{ code: string; message: string; detail?: Record<string, unknown> }>;
}

export function parseErrors(body: string): ErrorBody["errors"] {
  return (JSON.parse(body) as ErrorBody).errors;
}

type After = { after(fn: () => Promise<void>): void };

/** A registry for federation tests: loopback sources allowed, 1 s fetch timeout, closed after the test. */
export async function federatedRegistry(t: After, federation: Record<string, unknown>, dataDir?: string): Promise<TestRegistry> {
  const r = await startTestRegistry({ federation: { ...federation, proxy: { allowPrivateNetworks: true, timeout: "1s", ...(federation.proxy as object) } } }, dataDir);
  t.after(() => r.close());
  return r;
}

/** A FakeSource on loopback, closed after the test. */
export async function fakeSource(t: After): Promise<FakeSource> {
  const s = await new FakeSource().start();
  t.after(() => s.close());
  return s;
}

/** Federation settings with one rule for every loopback source, in the given serve mode. */
export function serveAll(serve: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { rules: [{ match: "^http://127\\.0\\.0\\.1:", serve, ...extra }] };
}
