/**
 * The audit log file: one JSON object per line, appended.
 *
 * - The file is opened with O_APPEND and each batch of whole lines is one
 *   write(2), so lines from `--workers N` processes sharing the file never
 *   interleave inside a line.
 * - Writes never block a request: lines queue in memory while one write is in
 *   flight, up to `maxQueueBytes`; past that they are dropped and counted (a
 *   slow or full disk must not grow the heap without bound), and the next line
 *   that gets through is preceded by an `audit.dropped` line saying how many.
 */
import { mkdirSync, openSync, write, close as closeFd } from "node:fs";
import { dirname } from "node:path";
import type { Logger } from "pino";
import { Counter, type Registry } from "prom-client";

export type AuditRecord = Record<string, string | number | boolean | null | undefined>;

export interface AuditLogOptions {
  path: string;
  maxQueueBytes: number;
  logger: Logger;
}

/** How often a failing disk is reported in the server log, at most. */
const WARN_EVERY_MS = 60_000;

export class AuditLog {
  private readonly fd: number;
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private writing = false;
  private dropped = 0;
  private lastWarning = 0;
  private closed = false;
  private drained: Array<() => void> = [];
  private droppedCounter?: Counter;

  constructor(private readonly options: AuditLogOptions) {
    mkdirSync(dirname(options.path), { recursive: true });
    // 0640: who did what, from where, is for operators, not for every local user.
    this.fd = openSync(options.path, "a", 0o640);
  }

  /** Counts dropped lines on /metrics as ferry_audit_dropped_lines_total. */
  countDropsIn(registry: Registry): void {
    this.droppedCounter ??= new Counter({
      name: "ferry_audit_dropped_lines_total",
      help: "Audit log lines dropped because the disk did not keep up or failed",
      registers: [registry],
    });
  }

  get path(): string {
    return this.options.path;
  }

  append(record: AuditRecord): void {
    if (this.closed) return;
    const line = Buffer.from(`${JSON.stringify(record)}\n`, "utf8");
    if (this.queuedBytes + line.length > this.options.maxQueueBytes) {
      this.drop(1, "the disk does not keep up");
      return;
    }
    if (this.dropped > 0) {
      const notice = Buffer.from(`${JSON.stringify({ time: new Date().toISOString(), action: "audit.dropped", count: this.dropped })}\n`);
      this.dropped = 0;
      this.enqueue(notice);
    }
    this.enqueue(line);
  }

  /** Waits until every queued line was written (or dropped), then closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.writing || this.queue.length > 0) await new Promise<void>((resolve) => this.drained.push(resolve));
    await new Promise<void>((resolve) => closeFd(this.fd, () => resolve()));
  }

  private enqueue(line: Buffer): void {
    this.queue.push(line);
    this.queuedBytes += line.length;
    if (!this.writing) this.flush();
  }

  private flush(): void {
    if (this.queue.length === 0) {
      for (const resolve of this.drained.splice(0)) resolve();
      return;
    }
    const batch = this.queue.length === 1 ? this.queue[0]! : Buffer.concat(this.queue);
    const lines = this.queue.length;
    this.queue = [];
    this.queuedBytes = 0;
    this.writing = true;
    this.writeAll(batch, 0, (error) => {
      this.writing = false;
      if (error) this.drop(lines, `writing ${this.options.path} failed: ${error.message}`);
      this.flush();
    });
  }

  /** A short write (rare on files, e.g. the disk just filled) continues where it stopped. */
  private writeAll(buffer: Buffer, offset: number, done: (error: NodeJS.ErrnoException | null) => void): void {
    write(this.fd, buffer, offset, buffer.length - offset, null, (error, written) => {
      if (error) return done(error);
      if (offset + written < buffer.length) return this.writeAll(buffer, offset + written, done);
      done(null);
    });
  }

  private drop(lines: number, why: string): void {
    this.dropped += lines;
    this.droppedCounter?.inc(lines);
    const now = Date.now();
    if (now - this.lastWarning >= WARN_EVERY_MS) {
      this.lastWarning = now;
      this.options.logger.error({ path: this.options.path, dropped: lines }, `audit log lines dropped: ${why}`);
    }
  }
}

/** Opens the audit log, or says which file could not be opened and why (start-up stops there). */
export function openAuditLog(path: string, maxQueueBytes: number, logger: Logger): AuditLog {
  try {
    return new AuditLog({ path, maxQueueBytes, logger });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === "EACCES" || code === "EPERM" ? "permission denied" : code === "EISDIR" ? "it is a directory" : (code ?? (error as Error).message);
    throw new Error(`audit log ${path} cannot be opened for appending: ${reason} (set audit.path, or audit.enabled: false)`);
  }
}
