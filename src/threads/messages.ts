/** What the main thread and the serving threads of `ferry serve` tell each other (src/threads/). */
import type { ServerFlags } from "../cli/server-config.js";
import type { MetricsJson } from "./metrics.js";

/** A serving thread's start: the same flags as the process, and where the main thread listens (resolved, actual port). */
export interface ThreadData {
  flags: ServerFlags;
  address: string;
  port: number;
  /** 1, 2, ... (the main thread is 0), for log lines. */
  index: number;
  /** The process's count of large bodies streaming through JavaScript (src/memory/streaming-heap.ts). */
  streamingState: SharedArrayBuffer;
}

export type ToMain =
  | { type: "ready" }
  | { type: "startup-failed"; message: string }
  /** This thread's own metrics, answering a "collect". */
  | { type: "metrics"; id: number; metrics: MetricsJson }
  /** A scrape reached this thread: asks for the whole process's /metrics text. */
  | { type: "scrape"; id: number }
  | { type: "drained" };

export type ToThread =
  | { type: "collect"; id: number }
  | { type: "scraped"; id: number; text: string; error?: string }
  | { type: "drain"; graceMs: number };

export function isMessage<T extends { type: string }>(value: unknown): value is T {
  return typeof value === "object" && value !== null && typeof (value as { type?: unknown }).type === "string";
}
