/**
 * A webhook receiver on loopback for notification tests. It answers each
 * delivery by its current behaviour (accept, fail with a status, or hang past
 * the sender's timeout) and remembers every request; `accepted` holds the
 * events of deliveries it answered 2xx, in the order it answered them.
 */
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { Socket } from "node:net";
import { createHmac, timingSafeEqual } from "node:crypto";

export type Behaviour = { kind: "ok" } | { kind: "status"; status: number } | { kind: "hang" };

export interface ReceivedEvent {
  id: string;
  timestamp: string;
  action: string;
  target: Record<string, unknown> & { repository?: string; digest?: string; tag?: string; mediaType?: string; size?: number };
  request?: Record<string, string>;
  actor: { name?: string };
  source: { addr: string; instanceID: string };
  ferry?: Record<string, unknown>;
}

export interface Delivery {
  headers: IncomingHttpHeaders;
  body: Buffer;
  answered: number | "hung";
}

export class Receiver {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  readonly deliveries: Delivery[] = [];
  readonly accepted: ReceivedEvent[] = [];
  /** Decides each answer; the default accepts everything. */
  behaviour: (delivery: number) => Behaviour = () => ({ kind: "ok" });
  port = 0;

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  async start(port = 0): Promise<this> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () => {
        const body = Buffer.concat(chunks);
        const behaviour = this.behaviour(this.deliveries.length);
        const delivery: Delivery = { headers: req.headers, body, answered: behaviour.kind === "hang" ? "hung" : behaviour.kind === "ok" ? 200 : behaviour.status };
        this.deliveries.push(delivery);
        if (behaviour.kind === "hang") return; // the sender times out; the socket is closed at stop()
        if (behaviour.kind === "ok") this.accepted.push(...(JSON.parse(body.toString()) as { events: ReceivedEvent[] }).events);
        res.writeHead(delivery.answered as number, { "Content-Type": "text/plain" }).end("thanks");
      });
    });
    this.server.on("connection", (socket: Socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => this.server!.listen(port, "127.0.0.1", resolve));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  /** Waits until `check` holds (polling), or fails with `what`. */
  async until(check: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; ${this.deliveries.length} deliveries, ${this.accepted.length} accepted`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

/** What a receiver does with Ferry-Signature-256 (docs/notifications.md): recompute over the raw body, compare in constant time. */
export function verifySignature(secret: string, body: Buffer, header: string | string[] | undefined): boolean {
  if (typeof header !== "string" || !header.startsWith("sha256=")) return false;
  const expected = Buffer.from(createHmac("sha256", secret).update(body).digest("hex"));
  const given = Buffer.from(header.slice("sha256=".length));
  return given.length === expected.length && timingSafeEqual(given, expected);
}
