/**
 * Federation as configured (docs/federation.md). With no
 * `federation` key this behaves as the spec baseline: URLs are policed for
 * scheme and syntax only, nothing is fetched, and blob requests answer in
 * `error` mode. Manifests are never rewritten; everything here works from
 * the per-repository foreign-layer marks.
 */
import type { Logger } from "pino";
import { RegistryError, type ErrorBodyEntry } from "../oci/errors.js";
import type { Descriptor } from "../oci/manifest.js";
import type { ForeignLayerMark, ForeignLayerWrite, MetaStore } from "../metadata/meta-store.js";
import type { Extension } from "../http/app.js";
import type { AdmitRequest, AdmitResult, ClientGateRequest, Federation, ForeignBlobResponse, ServeRequest } from "./federation.js";
import type { BlobStore } from "../storage/blob-store.js";
import type { FederationConfig } from "./config.js";
import { federationDisabled, foreignLayerNotServed, clientSupportRequired } from "./errors.js";
import { UrlPolicy, type AllowedUrl } from "./policy.js";
import { SafeFetcher, type FetcherOptions } from "./fetcher.js";
import { SourceHealth } from "./health.js";
import { ProxyCache } from "./cache.js";
import { Proxy } from "./proxy.js";
import { Verifier, summarize, type KeepPolicy, type Verification, type VerifyMode } from "./verifier.js";
import { signUrl } from "./signer.js";
import { adminExtensions } from "./admin.js";

/** The request header a client sends to say it fetches foreign layers itself (docs/federation.md). */
export const CLIENT_SUPPORT_HEADER = "ferry-foreign-layers";
export const CLIENT_SUPPORT_VALUE = "supported";

/** Layers verified at once during one push. */
const VERIFY_CONCURRENCY = 4;

export interface FederationServiceOptions {
  config: FederationConfig;
  meta: MetaStore;
  logger: Logger;
  /** The proxy cache's blob store namespace (apart from pushed blobs; shared by replicas when the store is). */
  cacheStore: BlobStore;
  /** Test hooks for the fetcher (DNS, address policy). */
  fetcher?: Partial<Pick<FetcherOptions, "resolve" | "addressPolicy">>;
}

export class FederationService implements Federation {
  readonly policy: UrlPolicy;
  readonly fetcher: SafeFetcher;
  readonly health: SourceHealth;
  readonly cache: ProxyCache;
  readonly verifier: Verifier;
  readonly extensions: Extension[];
  private readonly proxy: Proxy;
  private readonly config: FederationConfig;
  private readonly meta: MetaStore;
  private readonly privatePatterns: RegExp[];
  private readonly cacheStore: BlobStore;

  constructor(options: FederationServiceOptions) {
    const { config, meta, logger } = options;
    this.config = config;
    this.meta = meta;
    this.policy = new UrlPolicy(config);
    this.fetcher = new SafeFetcher({ schemes: config.schemes, allowPrivateNetworks: config.proxy.allowPrivateNetworks, policy: this.policy, ...options.fetcher });
    this.health = new SourceHealth(meta, logger);
    this.cacheStore = options.cacheStore;
    this.cache = new ProxyCache({ store: options.cacheStore, meta, ttlMs: config.proxy.cacheTtl, maxBytes: config.proxy.cacheMaxBytes, logger });
    this.verifier = new Verifier(this.fetcher, this.health, this.cache);
    this.proxy = new Proxy(this.fetcher, this.health, this.cache, meta, config.proxy.timeout, logger);
    this.privatePatterns = config.privateRepositoryPatterns.map(globToRegExp);
    this.extensions = adminExtensions(this);
  }

  async init(cleanup = true): Promise<void> {
    await this.health.load();
    await this.cache.init(cleanup);
  }

  get enabled(): boolean {
    return this.config.enabled;
  }

  get verifyMode(): FederationConfig["verify"]["mode"] {
    return this.config.verify.mode;
  }

  isPrivate(repository: string, anonymousCannotRead: boolean): boolean {
    return anonymousCannotRead || this.privatePatterns.some((pattern) => pattern.test(repository));
  }

  async admit(request: AdmitRequest): Promise<AdmitResult> {
    if (!this.config.enabled) throw federationDisabled(request);
    const warnings: string[] = [];
    if (this.isPrivate(request.repository, request.isPrivate)) warnings.push(...this.checkPrivate(request));
    this.checkPolicy(request.layers);
    const marks = await this.verifyLayers(request, warnings);
    return { marks, warnings };
  }

  private checkPrivate(request: AdmitRequest): string[] {
    const policy = this.config.privateRepositories;
    if (policy === "allow") return [];
    const digests = request.layers.map((l) => l.digest);
    const why =
      `repository ${request.repository} is private, but foreign layers are public by nature: ` +
      `anyone who sees the manifest learns their URLs, and the URL hosts see every pull`;
    if (policy === "deny") {
      throw new RegistryError("MANIFEST_INVALID", `${why}. This registry refuses foreign layers in private repositories: push the layers into the registry instead (e.g. crane --allow-nondistributable-artifacts, ferry copy --include-foreign)`, {
        detail: { repository: request.repository, foreignLayers: digests, privateRepositories: "deny" },
      });
    }
    return [`${why} (layers ${digests.join(", ")})`];
  }

  /** Every URL of every layer against the policy; all violations in one 400. */
  private checkPolicy(layers: Descriptor[]): void {
    const violations: ErrorBodyEntry[] = [];
    for (const layer of layers) {
      for (const url of layer.urls ?? []) {
        const decision = this.policy.decide(url);
        if (decision.allowed) continue;
        violations.push({
          code: "MANIFEST_INVALID",
          message: `foreign layer ${layer.digest}: URL ${url} ${decision.reason} (rule: ${decision.rule})`,
          detail: { digest: layer.digest, url, rule: decision.rule, reason: decision.reason },
        });
      }
    }
    if (violations.length === 0) return;
    const [first, ...rest] = violations;
    throw new RegistryError("MANIFEST_INVALID", first!.message, { detail: first!.detail, more: rest });
  }

  private async verifyLayers(request: AdmitRequest, warnings: string[]): Promise<ForeignLayerWrite[]> {
    const { mode, onFailure, timeout } = this.config.verify;
    const results = await mapLimit(request.layers, VERIFY_CONCURRENCY, async (layer) => {
      const base = { digest: layer.digest, mediaType: layer.mediaType, size: layer.size, urls: layer.urls ?? [] };
      if (mode === "off") return { mark: unverified(base, null), verification: null };
      // A pinned layer needs its bytes: a HEAD cannot pin, so such layers are fetched.
      const layerMode = mode === "head" && this.pinsAny(base.urls) ? "fetch" : mode;
      const existing = await this.meta.getForeignLayer(request.repository, layer.digest);
      if (existing && alreadyVerified(existing, base.urls, layerMode)) {
        return { mark: { ...base, verification: "verified" as const, verifiedAt: existing.verifiedAt, verificationDetail: existing.verificationDetail }, verification: null };
      }
      const verification = await this.verifier.verify({ ...base, urls: this.fetchableUrls(base.urls) }, layerMode, timeout, this.keepPolicy());
      if (verification.ok) {
        const provenUrls = verification.provenUrl ? [verification.provenUrl] : [];
        return { mark: { ...base, verification: "verified" as const, verifiedAt: Date.now(), verificationDetail: verification, provenUrls }, verification };
      }
      return { mark: unverified(base, verification), verification };
    });
    const failed = results.filter((r) => r.verification && !r.verification.ok);
    if (failed.length > 0 && onFailure === "reject") {
      const entries: ErrorBodyEntry[] = failed.map(({ mark, verification }) => ({
        code: "MANIFEST_BLOB_UNKNOWN",
        message: `foreign layer ${mark.digest} could not be verified (${mode}) at any of its URLs: ${summarize(verification!.attempts)}`,
        detail: { digest: mark.digest, verify: mode, attempts: verification!.attempts.map(({ url, answer }) => ({ url, answer })) },
      }));
      const [first, ...rest] = entries;
      throw new RegistryError("MANIFEST_BLOB_UNKNOWN", first!.message, { detail: first!.detail, more: rest });
    }
    for (const { mark, verification } of failed) {
      warnings.push(`foreign layer ${mark.digest} could not be verified (${mode}); accepted unverified: ${summarize(verification!.attempts)}`);
    }
    return results.map((r) => r.mark);
  }

  /** URLs the registry may fetch under the current policy, in manifest order. */
  fetchableUrls(urls: string[]): string[] {
    return urls.filter((url) => this.policy.decide(url).allowed);
  }

  /** Verifies a stored mark on request (`ferry foreign verify`) and records the outcome. */
  async verifyMark(mark: ForeignLayerMark, mode: VerifyMode): Promise<Verification> {
    const verification = await this.verifier.verify({ ...mark, urls: this.fetchableUrls(mark.urls) }, mode, this.config.verify.timeout, this.keepPolicy());
    await this.meta.setForeignVerification(mark.repository, mark.digest, verification.ok ? "verified" : "failed", Date.now(), verification);
    if (verification.provenUrl) await this.meta.recordForeignProof(mark.repository, mark.digest, verification.provenUrl, Date.now());
    return verification;
  }

  /** Verified bytes go into the cache when the URL's rule proxies with a cache (a rule without one may forbid keeping copies). */
  private keepPolicy(): KeepPolicy {
    return (url) => {
      const decision = this.policy.decide(url);
      if (!decision.allowed || decision.serve !== "proxy" || !decision.cache) return null;
      return { pin: this.ruleOptions(decision).pin };
    };
  }

  private pinsAny(urls: string[]): boolean {
    return urls.some((url) => this.keepPolicy()(url)?.pin === true);
  }

  /**
   * The options of the rule behind a decision that policy.ts does not carry
   * (pin, verifyBeforeServe), found by the rule's index in its name.
   */
  private ruleOptions(decision: AllowedUrl): { pin: boolean; verifyBeforeServe: boolean | number | undefined } {
    const index = /^rules\[(\d+)\]/.exec(decision.rule);
    const rule = index ? this.config.rules[Number(index[1])] : this.config.default;
    return { pin: rule?.pin ?? false, verifyBeforeServe: rule?.verifyBeforeServe };
  }

  /** Whether a blob of `size` is fetched and verified whole before the client gets a byte. */
  private verifiesBeforeServing(decision: AllowedUrl, size: number): boolean {
    const setting = this.ruleOptions(decision).verifyBeforeServe ?? this.config.proxy.verifyBeforeServe;
    return typeof setting === "boolean" ? setting : size <= setting;
  }

  async serve(request: ServeRequest): Promise<ForeignBlobResponse> {
    const { mark } = request;
    if (!this.config.enabled) throw foreignLayerNotServed(request);
    // Only this repository's own URLs (the mark is per repository): another repository's sources never serve it.
    const allowed = mark.urls.map((url) => this.policy.decide(url)).filter((d): d is AllowedUrl => d.allowed);
    const first = allowed[0];
    if (!first) throw refusedByPolicy(mark);
    const candidates = allowed.filter((d) => d.serve === first.serve);
    switch (first.serve) {
      case "error":
        throw foreignLayerNotServed(request);
      case "redirect": {
        const target = candidates.find((d) => this.health.isHealthy(d.url)) ?? first;
        // The canonical form is what the policy judged: a client's parser never gets to read another spelling.
        const location = target.sign ? signUrl(target.canonical, target.sign.secret, target.sign.expires) : target.canonical;
        return { kind: "redirect", location };
      }
      case "proxy":
        // HEAD answers from the mark: no reason to wake the source for a size the manifest already states.
        if (request.method === "HEAD") return { kind: "head", size: mark.size };
        return this.proxy.serve({
          repository: request.repository,
          mark,
          candidates: candidates.map((d) => d.url),
          allowed: allowed.map((d) => d.url),
          range: request.range,
          cache: first.cache,
          pin: this.ruleOptions(first).pin,
          verifyBeforeServe: this.verifiesBeforeServing(first, mark.size),
        });
    }
  }

  async gateManifest(request: ClientGateRequest): Promise<void> {
    if (!this.config.requireClientSupport) return;
    if (declaresSupport(request.headers[CLIENT_SUPPORT_HEADER])) return;
    const marks = await this.meta.foreignLayersOfManifest(request.repository, request.manifestDigest);
    if (marks.length === 0) return;
    throw clientSupportRequired(request.manifestDigest, marks.map((mark) => this.modeOf(mark)));
  }

  /** How a blob request for the layer is answered now (the rule of its first allowed URL), or null when none is allowed. */
  private modeOf(mark: ForeignLayerMark): "error" | "redirect" | "proxy" | null {
    if (!this.config.enabled) return "error";
    for (const url of mark.urls) {
      const decision = this.policy.decide(url);
      if (decision.allowed) return decision.serve;
    }
    return null;
  }

  async listMarks(repository?: string): Promise<ForeignLayerMark[]> {
    // The admin view reads the cache index synchronously afterwards (describeMark, stats): bring it up to date.
    await this.cache.refresh();
    return this.meta.listForeignLayers(repository);
  }

  /** What the admin API shows for a mark: how each URL would be served now, and whether this repository gets cached bytes. */
  describeMark(mark: ForeignLayerMark) {
    const allowed = mark.urls.filter((url) => this.policy.decide(url).allowed);
    // Served the way the first allowed URL's rule says (as blob requests are): only a caching proxy rule reads the cache.
    const serving = allowed.length > 0 ? this.policy.decide(allowed[0]!) : null;
    const servesFromCache = serving !== null && serving.allowed && serving.serve === "proxy" && Boolean(serving.cache);
    return {
      ...mark,
      provenUrls: mark.provenUrls ?? [],
      cached: servesFromCache && this.cache.has(mark.digest) && (mark.provenUrls ?? []).some((url) => allowed.includes(url)),
      pinned: this.cache.pinned(mark.digest),
      policy: mark.urls.map((url) => {
        const decision = this.policy.decide(url);
        return decision.allowed
          ? { url, allowed: true, rule: decision.rule, serve: decision.serve, cache: decision.cache, signed: decision.sign !== undefined, healthy: this.health.isHealthy(url) }
          : { url, allowed: false, rule: decision.rule, reason: decision.reason };
      }),
    };
  }

  async close(): Promise<void> {
    this.fetcher.close();
    await this.cacheStore.close();
  }
}

function unverified(base: Omit<ForeignLayerWrite, "verification" | "verifiedAt" | "verificationDetail">, detail: Verification | null): ForeignLayerWrite {
  return { ...base, verification: "unverified", verifiedAt: null, verificationDetail: detail };
}

function refusedByPolicy(mark: ForeignLayerMark): RegistryError {
  return new RegistryError(
    "BLOB_UNKNOWN",
    `blob ${mark.digest} is a foreign layer, and the registry's current federation policy refuses every one of its URLs (${mark.urls.join(", ")})`,
    { detail: { digest: mark.digest, foreign: true, urls: mark.urls } },
  );
}

function declaresSupport(value: string | string[] | undefined): boolean {
  const values = Array.isArray(value) ? value : value === undefined ? [] : [value];
  return values.some((v) => v.split(",").some((part) => part.trim().toLowerCase() === CLIENT_SUPPORT_VALUE));
}

/**
 * A layer need not be checked again at push: `fetch` when one of this
 * descriptor's URLs already delivered the bytes for the repository (a proof),
 * `head` when the mark is verified and names every URL of this descriptor.
 */
function alreadyVerified(existing: ForeignLayerMark, urls: string[], mode: VerifyMode): boolean {
  if (mode === "fetch") return (existing.provenUrls ?? []).some((url) => urls.includes(url));
  return existing.verification === "verified" && urls.every((url) => existing.urls.includes(url));
}

/** `*` matches within one path component, `**` across components. */
export function globToRegExp(glob: string): RegExp {
  const source = glob
    .split("**")
    .map((part) => part.split("*").map((piece) => piece.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join("[^/]*"))
    .join(".*");
  return new RegExp(`^${source}$`);
}

async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
