/**
 * A foreign-layer source on 127.0.0.1 that honours `Range` (as CDNs do) and
 * can misbehave after its headers: cut the connection after N bytes, send
 * wrong bytes, answer HEAD with the right size but GET with other bytes.
 * Records every request with its Range header.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";

export type RangeBehaviour =
  | { kind: "ok" }
  | { kind: "status"; status: number }
  /** Headers for the whole answer, then `afterBytes` bytes, then the connection is cut. */
  | { kind: "cut"; afterBytes: number }
  | { kind: "wrong-bytes"; ignoreRange?: boolean }
  /** Ignores Range: always 200 with the whole blob. */
  | { kind: "no-range" }
  /** A Range answered with the wrong Content-Range (the bytes of another offset). */
  | { kind: "bad-content-range" };

export interface RangeRequest {
  method: string;
  path: string;
  range: string | undefined;
}

export class RangeSource {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly files = new Map<string, Buffer>();
  private readonly behaviours = new Map<string, RangeBehaviour>();
  readonly requests: RangeRequest[] = [];
  port = 0;

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  put(path: string, bytes: Buffer): string {
    this.files.set(path, bytes);
    return this.url(path);
  }

  behave(path: string, behaviour: RangeBehaviour): void {
    this.behaviours.set(path, behaviour);
  }

  gets(path?: string): RangeRequest[] {
    return this.requests.filter((r) => r.method === "GET" && (path === undefined || r.path === path));
  }

  async start(): Promise<this> {
    const server = createServer((req, res) => {
      const path = (req.url ?? "/").split("?")[0]!;
      const range = req.headers.range;
      this.requests.push({ method: req.method ?? "GET", path, range });
      const bytes = this.files.get(path);
      const behaviour = this.behaviours.get(path) ?? { kind: "ok" };
      if (behaviour.kind === "status") return void res.writeHead(behaviour.status, { "Content-Length": 0 }).end();
      if (!bytes) return void res.writeHead(404, { "Content-Length": 0 }).end();
      if (req.method === "HEAD") return void res.writeHead(200, { "Content-Length": bytes.length }).end();
      let body = bytes;
      if (behaviour.kind === "wrong-bytes") {
        body = Buffer.from(bytes);
        body[body.length - 1] = body[body.length - 1]! ^ 0xff;
      }
      const ignoresRange = behaviour.kind === "no-range" || (behaviour.kind === "wrong-bytes" && behaviour.ignoreRange === true);
      const match = range && !ignoresRange ? /^bytes=(\d+)-(\d*)$/.exec(range) : null;
      if (match) {
        const start = Number(match[1]);
        const end = match[2] ? Math.min(Number(match[2]), bytes.length - 1) : bytes.length - 1;
        const shift = behaviour.kind === "bad-content-range" ? 1 : 0;
        res.writeHead(206, { "Content-Length": end - start + 1, "Content-Range": `bytes ${start + shift}-${end + shift}/${bytes.length}` });
        body = body.subarray(start, end + 1);
      } else {
        res.writeHead(200, { "Content-Length": body.length });
      }
      if (behaviour.kind === "cut") {
        res.write(body.subarray(0, behaviour.afterBytes), () => setTimeout(() => req.socket.destroy(), 20));
        return;
      }
      res.end(body);
    });
    server.on("connection", (socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(this.port, "127.0.0.1", () => resolve()));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
    return this;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
