/**
 * Whether THIS replica can serve: it reaches its metadata store and its blob
 * store. `/healthz` answers from here, and a load balancer takes a replica out
 * of rotation when it says 503 (docs/deployment.md).
 *
 * Each probe has a short timeout, so a replica whose database or object store
 * stopped answering says so within `timeoutMs` instead of hanging the check
 * (haproxy would then count a timeout, later). Probes of concurrent health
 * requests are shared and a result is reused for `cacheMs`: /healthz needs no
 * credentials, so it must not let anyone multiply requests to the stores.
 *
 * The answer names the part that failed and a short reason (an error code,
 * "timed out"), never a path, URL, bucket or credential.
 */

export type ProbeName = "metadata" | "blobs";

/** Resolves when the part is reachable; rejects (any error) when it is not. */
export type Probe = () => Promise<unknown>;

export interface ProbeResult {
  ok: boolean;
  /** How long the probe took (or until it timed out). */
  ms: number;
  /** Why it failed: an error code or "timed out after N ms". */
  error?: string;
}

export interface Readiness {
  ok: boolean;
  checks: Record<ProbeName, ProbeResult>;
  /** Information that does not decide readiness (e.g. whether cache invalidation is live). */
  details?: Record<string, unknown>;
}

export interface ReadinessOptions {
  timeoutMs: number;
  cacheMs: number;
  now?: () => number;
  /** Computed on every check, never probed. */
  details?: () => Record<string, unknown> | undefined;
}

export class ReadinessCheck {
  private last: { at: number; result: Readiness } | null = null;
  private running: Promise<Readiness> | null = null;
  private readonly now: () => number;

  constructor(
    private readonly probes: Record<ProbeName, Probe>,
    private readonly options: ReadinessOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  async check(): Promise<Readiness> {
    const result = this.last && this.now() - this.last.at < this.options.cacheMs ? this.last.result : await (this.running ??= this.runAll().finally(() => (this.running = null)));
    const details = this.options.details?.();
    return details ? { ...result, details } : result;
  }

  private async runAll(): Promise<Readiness> {
    const names = Object.keys(this.probes) as ProbeName[];
    const results = await Promise.all(names.map((name) => runProbe(this.probes[name], this.options.timeoutMs)));
    const checks = Object.fromEntries(names.map((name, i) => [name, results[i]!])) as Record<ProbeName, ProbeResult>;
    const result = { ok: results.every((r) => r.ok), checks };
    this.last = { at: this.now(), result };
    return result;
  }
}

async function runProbe(probe: Probe, timeoutMs: number): Promise<ProbeResult> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ProbeTimeout(timeoutMs)), timeoutMs);
  });
  try {
    // A probe that hangs keeps running in the background; the answer does not wait for it.
    await Promise.race([Promise.resolve().then(probe), timeout]);
    return { ok: true, ms: Math.round(performance.now() - started) };
  } catch (error) {
    return { ok: false, ms: Math.round(performance.now() - started), error: describe(error) };
  } finally {
    clearTimeout(timer);
  }
}

class ProbeTimeout extends Error {
  constructor(readonly ms: number) {
    super(`timed out after ${ms} ms`);
  }
}

/** A reason safe to show anyone: error messages can hold paths and URLs, codes cannot. */
function describe(error: unknown): string {
  if (error instanceof ProbeTimeout) return error.message;
  const e = error as { code?: unknown; name?: unknown; $metadata?: { httpStatusCode?: unknown } };
  if (typeof e?.code === "string" && /^[A-Z0-9_]{2,40}$/.test(e.code)) return e.code;
  const status = e?.$metadata?.httpStatusCode;
  if (typeof status === "number") return `status ${status}`;
  if (typeof e?.name === "string" && /^[A-Za-z]{2,60}$/.test(e.name) && e.name !== "Error") return e.name;
  return "unreachable";
}
