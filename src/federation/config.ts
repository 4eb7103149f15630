/** The `federation` config section (see docs/federation.md for every key). */
import { z } from "zod";
import { duration, size } from "../config/types.js";

const serveMode = z.enum(["error", "redirect", "proxy"]);

const signSchema = z.strictObject({
  secret: z.string().min(16, "a signing secret needs at least 16 characters"),
  expires: duration.default(15 * 60_000),
});

const regex = z.string().transform((source, ctx) => {
  try {
    return new RegExp(source);
  } catch (error) {
    ctx.addIssue({ code: "custom", message: `not a valid regular expression: ${(error as Error).message}` });
    return z.NEVER;
  }
});

/** `cache: true` keeps verified blobs (LRU, TTL); `cache: pin` keeps a permanent copy (never evicted, never expires). */
const cacheOption = z.union([z.boolean(), z.literal("pin")]).default(false);

/**
 * Store and forward: `true` always, `false` never, or a size (blobs up to it).
 * Unset, `proxy.verifyBeforeServe` decides.
 */
const verifyBeforeServeOption = z.union([z.boolean(), size]);

/** `cache: pin` becomes `cache: true, pin: true`, so code that only asks "cached?" needs no change. */
function withPin<T extends { cache: boolean | "pin" }>(rule: T): Omit<T, "cache"> & { cache: boolean; pin: boolean } {
  return { ...rule, cache: rule.cache !== false, pin: rule.cache === "pin" };
}

export const federationRuleSchema = z
  .strictObject({
    // A rule has `match`, `hosts` or both (UrlPolicy refuses neither); both are tested on the canonical URL.
    match: regex.optional(),
    /** Host names without a regex: "cdn.example.com", "*.cdn.example.com" (any name below it), IP literals. */
    hosts: z.array(z.string().regex(/^(\*\.)?[A-Za-z0-9._-]+$|^\[[0-9A-Fa-f:.]+\]$/, 'a host name ("cdn.example.com", "*.cdn.example.com") or an IP address ("10.0.0.1", "[2001:db8::1]"), without scheme, port or path')).min(1).optional(),
    serve: serveMode.default("error"),
    cache: cacheOption,
    sign: signSchema.optional(),
    deny: z.boolean().default(false),
    verifyBeforeServe: verifyBeforeServeOption.optional(),
  })
  .transform(withPin);

/** Blobs up to this size are fetched and verified whole before the client gets a byte. */
export const DEFAULT_VERIFY_BEFORE_SERVE = 64 * 1024 * 1024;

const verifyMode = z.preprocess((v) => (v === false ? "off" : v), z.enum(["off", "head", "fetch"]));

export const federationConfigSchema = z.strictObject({
  enabled: z.boolean().default(true),
  schemes: z.array(z.enum(["https", "http"])).min(1).default(["https", "http"]),
  rules: z.array(federationRuleSchema).default([]),
  default: z
    .strictObject({
      serve: serveMode.default("error"),
      cache: cacheOption,
      sign: signSchema.optional(),
      deny: z.boolean().default(false),
      verifyBeforeServe: verifyBeforeServeOption.optional(),
    })
    .transform(withPin)
    .default({ serve: "error", cache: false, pin: false, deny: false }),
  verify: z
    .strictObject({
      mode: verifyMode.default("off"),
      onFailure: z.enum(["reject", "warn"]).default("reject"),
      timeout: duration.default(10_000),
    })
    .default({ mode: "off", onFailure: "reject", timeout: 10_000 }),
  proxy: z
    .strictObject({
      timeout: duration.default(30_000),
      cacheTtl: duration.default(168 * 3_600_000),
      cacheMaxBytes: size.default(10 * 1024 ** 3),
      allowPrivateNetworks: z.boolean().default(false),
      /** Store and forward blobs up to this size (true: all, false: none); rules may override it. */
      verifyBeforeServe: verifyBeforeServeOption.default(DEFAULT_VERIFY_BEFORE_SERVE),
    })
    .default({
      timeout: 30_000,
      cacheTtl: 168 * 3_600_000,
      cacheMaxBytes: 10 * 1024 ** 3,
      allowPrivateNetworks: false,
      verifyBeforeServe: DEFAULT_VERIFY_BEFORE_SERVE,
    }),
  privateRepositories: z.enum(["deny", "warn", "allow"]).default("warn"),
  /** Until access control decides it, which repositories count as private (globs). */
  privateRepositoryPatterns: z.array(z.string()).default([]),
  requireClientSupport: z.boolean().default(false),
  /** Background re-checks of every referenced URL (src/federation/recheck.ts); interval 0 = off. */
  recheck: z
    .strictObject({
      interval: duration.default(0),
      method: z.enum(["head", "fetch"]).default("head"),
      concurrency: z.number().int().min(1).max(64).default(4),
      timeout: duration.default(10_000),
    })
    .default({ interval: 0, method: "head", concurrency: 4, timeout: 10_000 }),
});

export type FederationConfig = z.output<typeof federationConfigSchema>;
export type FederationRule = z.output<typeof federationRuleSchema>;
