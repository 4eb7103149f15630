/**
 * Garbage collection from the UI (admin only):
 *   GET  /ferry/v1/gc   the last run this process saw (scheduled or requested) and whether one runs now
 *   POST /ferry/v1/gc   runs one now with the configured grace period; answers its report
 * A POST while a run is in progress waits for that run instead of starting
 * another (and across processes, gc itself skips when another process holds
 * the collection lease).
 */
import type { Extension } from "../http/app.js";
import { sendJson } from "../http/respond.js";
import type { GcReport } from "../registry/gc.js";
import { refuseCrossSite } from "../http/same-origin.js";
import type { GcState } from "./wire.js";

export interface GcRun {
  startedAt: number;
  finishedAt: number;
  report?: GcReport;
  /** Why the run failed (no paths or stack: the message of a RegistryError or "failed"). */
  error?: string;
}

/** Remembers the last garbage collection of this process, and which run is in progress. */
export class GcLog {
  last: GcRun | null = null;
  private running: Promise<GcReport> | null = null;

  get busy(): boolean {
    return this.running !== null;
  }

  /** Runs `gc` and records its outcome (every caller: the schedule, RunningRegistry.gc, the UI). */
  run(gc: () => Promise<GcReport>): Promise<GcReport> {
    const startedAt = Date.now();
    const run = gc().then(
      (report) => {
        this.last = { startedAt, finishedAt: Date.now(), report };
        return report;
      },
      (error: unknown) => {
        this.last = { startedAt, finishedAt: Date.now(), error: "garbage collection failed; see the registry's log" };
        throw error;
      },
    );
    this.running = run;
    const clear = () => {
      if (this.running === run) this.running = null;
    };
    run.then(clear, clear);
    return run;
  }

  /** Joins the run in progress, or starts one: a second click while one runs does not start another. */
  runOrJoin(gc: () => Promise<GcReport>): Promise<GcReport> {
    return this.running ?? this.run(gc);
  }
}

const ADMIN = [{ type: "admin" as const }];
const NO_STORE = { "Cache-Control": "no-store" };

export function gcExtensions(log: GcLog, gc: () => Promise<GcReport>): Extension[] {
  return [
    {
      method: "GET",
      path: /^\/ferry\/v1\/gc$/,
      access: ADMIN,
      async handle(ctx) {
        sendJson(ctx.res, 200, { running: log.busy, last: log.last } satisfies GcState, NO_STORE);
      },
    },
    {
      method: "POST",
      path: /^\/ferry\/v1\/gc$/,
      access: ADMIN,
      async handle(ctx) {
        refuseCrossSite(ctx);
        await log.runOrJoin(gc);
        sendJson(ctx.res, 200, { running: false, last: log.last } satisfies GcState, NO_STORE);
      },
    },
  ];
}
