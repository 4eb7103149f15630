/**
 * Raw-socket helpers for the abuse suites: exact bytes on the wire (framing
 * fetch would never send), the server's descriptor count (the test server
 * runs in this process), and connections held open on purpose.
 */
import { connect, type Socket } from "node:net";
import { readdir } from "node:fs/promises";
import { readdirSync } from "node:fs";
import { join } from "node:path";

export interface Exchange {
  status: number;
  raw: string;
  /** Milliseconds until the server closed the connection (or the timeout). */
  closedAfterMs: number;
  /** True when the server closed the connection before the timeout. */
  closedByServer: boolean;
}

/**
 * Writes `parts` (with `gapMs` between them), then reads until the server
 * closes the connection or `timeoutMs` passes.
 */
export function exchange(base: string, parts: Array<string | Buffer>, gapMs = 0, timeoutMs = 5000, from?: string): Promise<Exchange> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect({ host: url.hostname, port: Number(url.port), localAddress: from });
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (byServer: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const raw = Buffer.concat(chunks).toString("latin1");
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(raw);
      resolve({ status: match ? Number(match[1]) : 0, raw, closedAfterMs: Date.now() - started, closedByServer: byServer });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("end", () => finish(true));
    socket.on("close", () => finish(true));
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (chunks.length > 0 || error.code === "ECONNRESET" || error.code === "EPIPE") finish(true);
      else reject(error);
    });
    socket.once("connect", async () => {
      for (const [i, part] of parts.entries()) {
        if (i > 0 && gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
        if (socket.destroyed) return;
        socket.write(part);
      }
    });
  });
}

/** Opens a connection, writes `head`, and keeps it open until closed by the caller or the server. */
export function holdOpen(base: string, head: string | Buffer, from?: string): Promise<{ socket: Socket; received: () => string; closed: Promise<number> }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect({ host: url.hostname, port: Number(url.port), localAddress: from });
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    const closed = new Promise<number>((r) => socket.once("close", () => r(Date.now() - started)));
    socket.on("error", () => undefined);
    socket.once("connect", () => {
      socket.write(head);
      resolve({ socket, received: () => Buffer.concat(chunks).toString("latin1"), closed });
    });
    socket.once("error", reject);
  });
}

export function openDescriptors(): number {
  return readdirSync("/proc/self/fd").length;
}

/**
 * Waits until the descriptor count stops falling (or reaches `target`) and
 * returns it. Closing sockets takes a few event-loop turns.
 */
export async function settleDescriptors(target?: number, timeoutMs = 6000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = openDescriptors();
  let stableSince = Date.now();
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    const now = openDescriptors();
    if (target !== undefined && now <= target) return now;
    if (now !== last) {
      last = now;
      stableSince = Date.now();
    } else if (target === undefined && Date.now() - stableSince > 300) {
      return now;
    }
  }
  return openDescriptors();
}

/** Upload session files in a test registry's data directory. */
export async function uploadFiles(dataDir: string): Promise<number> {
  try {
    return (await readdir(join(dataDir, "uploads"))).length;
  } catch {
    return 0;
  }
}
