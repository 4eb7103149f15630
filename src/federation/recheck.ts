/**
 * Background re-verification of foreign layer sources (`federation.recheck`):
 * every `interval`, one process — whichever claims the round in the metadata
 * store first, so N workers or replicas on one store still run one round per
 * interval — HEADs (or fetches and digest-checks) every URL that a foreign
 * layer references and the current policy allows, at most `concurrency` at a
 * time, each bounded by `timeout`. It goes through the federation's Verifier,
 * so the SSRF-safe fetcher and the policy apply exactly as for a push, and
 * every outcome lands in the shared source-health records.
 */
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { MetaStore } from "../metadata/meta-store.js";
import type { FederationConfig } from "./config.js";
import type { Registry } from "prom-client";
import { FederationService } from "./service.js";
import { registerSourceMetrics } from "./source-metrics.js";
import { isPolicyRefusal } from "./health.js";

export type RecheckConfig = FederationConfig["recheck"];

export interface RoundReport {
  startedAt: number;
  finishedAt: number;
  /** URLs checked (each one attempt). */
  checked: number;
  ok: number;
  failed: number;
  /** Referenced URLs the policy (or the fetcher's address check) refuses: not counted as source health. */
  refused: number;
  /** Health records dropped because no foreign layer references their URL any more. */
  forgotten: number;
}

/** The parts of FederationService a round uses. */
export type RecheckFederation = Pick<FederationService, "policy" | "verifier" | "health" | "listMarks">;

export interface RecheckDeps {
  federation: RecheckFederation;
  meta: MetaStore;
  logger: Logger;
  config: RecheckConfig;
  /** Who claims rounds (default: host/pid/random); tests give two registries distinct names anyway. */
  holder?: string;
}

interface Target {
  url: string;
  digest: string;
  size: number;
}

export class ForeignRecheck {
  readonly holder: string;
  private timer: NodeJS.Timeout | undefined;
  private current: Promise<RoundReport | null> | null = null;
  private stopping = false;

  constructor(private readonly deps: RecheckDeps) {
    this.holder = deps.holder ?? `${hostname()}/${process.pid}/${randomBytes(4).toString("hex")}`;
  }

  get enabled(): boolean {
    return this.deps.config.interval > 0;
  }

  /** Ticks several times per interval; the claim in the store decides whether this process runs the round. */
  start(): void {
    if (!this.enabled || this.timer) return;
    const tick = Math.min(60_000, Math.max(100, Math.floor(this.deps.config.interval / 10)));
    this.timer = setInterval(() => {
      if (this.current || this.stopping) return;
      this.runOnce().catch((error: unknown) => this.deps.logger.error({ err: error }, "foreign source re-check failed"));
    }, tick);
    this.timer.unref();
  }

  /**
   * Runs a round if this process can claim it: null when another process ran
   * one less than `interval` ago or is still running one.
   */
  runOnce(): Promise<RoundReport | null> {
    if (this.current) return this.current;
    const run = this.round().finally(() => {
      this.current = null;
    });
    this.current = run;
    return run;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.timer);
    this.timer = undefined;
    await this.current?.catch(() => undefined);
  }

  private async round(): Promise<RoundReport | null> {
    const { meta, config, logger, federation } = this.deps;
    const startedAt = Date.now();
    // Long enough for a slow round; renewed while it runs, so only a dead holder's lease runs out.
    const leaseMs = Math.max(60_000, 3 * config.timeout);
    if (meta.claimRecheckRound && !(await meta.claimRecheckRound(this.holder, startedAt, config.interval, leaseMs))) return null;
    let lost = false;
    const renew = setInterval(() => {
      meta.renewRecheckRound?.(this.holder, Date.now() + leaseMs).then(
        (held) => {
          if (!held) lost = true;
        },
        (error: unknown) => logger.warn({ err: error }, "could not renew the foreign source re-check lease"),
      );
    }, leaseMs / 3);
    renew.unref();
    try {
      const { targets, refused } = await this.targets();
      let ok = 0;
      let failed = 0;
      let refusedByFetcher = 0;
      await forEachLimit(targets, config.concurrency, async (target) => {
        if (this.stopping || lost) return;
        const verification = await federation.verifier.verify({ digest: target.digest, size: target.size, urls: [target.url] }, config.method, config.timeout);
        if (verification.ok) ok++;
        else if (isPolicyRefusal({ error: verification.attempts[0]?.answer ?? null })) refusedByFetcher++;
        else failed++;
      });
      await federation.health.flush();
      const forgotten = await this.forgetUnreferenced(new Set([...targets.map((t) => t.url), ...refused]), startedAt);
      const finishedAt = Date.now();
      await meta.finishRecheckRound?.(this.holder, finishedAt, ok + failed);
      await federation.health.load();
      const report = { startedAt, finishedAt, checked: ok + failed, ok, failed, refused: refused.length + refusedByFetcher, forgotten };
      logger.info({ ...report, ms: finishedAt - startedAt }, "foreign sources re-checked");
      return report;
    } finally {
      clearInterval(renew);
    }
  }

  /** Every URL referenced by a foreign layer, once, with the layer it must serve; policy-refused ones apart. */
  private async targets(): Promise<{ targets: Target[]; refused: string[] }> {
    const { federation } = this.deps;
    const byUrl = new Map<string, Target>();
    const refused = new Set<string>();
    for (const mark of await federation.listMarks()) {
      for (const url of mark.urls) {
        if (byUrl.has(url) || refused.has(url)) continue;
        if (federation.policy.decide(url).allowed) byUrl.set(url, { url, digest: mark.digest, size: mark.size });
        else refused.add(url);
      }
    }
    return { targets: [...byUrl.values()], refused: [...refused] };
  }

  /** Records of URLs no layer references any more go, unless attempted during this round (a push in flight). */
  private async forgetUnreferenced(referenced: Set<string>, roundStart: number): Promise<number> {
    const { meta } = this.deps;
    if (!meta.listSourceHealth || !meta.forgetSourceHealth) return 0;
    const stale = (await meta.listSourceHealth())
      .filter((r) => !referenced.has(r.url) && Math.max(r.lastSuccessAt ?? 0, r.lastFailureAt ?? 0) < roundStart)
      .map((r) => r.url);
    if (stale.length > 0) await meta.forgetSourceHealth(stale);
    return stale.length;
  }
}

async function forEachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export interface ForeignSourcesJob {
  stop(): Promise<void>;
}

/**
 * Start-up wiring (src/server.ts): source-health metrics on `registry`, and
 * the re-check schedule when `federation.recheck.interval` is set.
 */
export function startForeignRecheck(
  federation: unknown,
  meta: MetaStore,
  config: FederationConfig,
  logger: Logger,
  registry: Registry,
): ForeignSourcesJob {
  registerSourceMetrics(registry, meta);
  if (!(federation instanceof FederationService)) return { stop: async () => undefined };
  federation.health.recheckSettings = config.recheck;
  const recheck = new ForeignRecheck({ federation, meta, logger: logger.child({ component: "federation-recheck" }), config: config.recheck });
  // Spec baseline: with recheck off (the default) nothing is fetched in the background.
  if (config.enabled) recheck.start();
  return { stop: () => recheck.stop() };
}
