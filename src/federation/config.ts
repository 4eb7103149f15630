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

export const federationRuleSchema = z.strictObject({
  match: regex,
  serve: serveMode.default("error"),
  cache: z.boolean().default(false),
  sign: signSchema.optional(),
  deny: z.boolean().default(false),
});

const verifyMode = z.preprocess((v) => (v === false ? "off" : v), z.enum(["off", "head", "fetch"]));

export const federationConfigSchema = z.strictObject({
  enabled: z.boolean().default(true),
  schemes: z.array(z.enum(["https", "http"])).min(1).default(["https", "http"]),
  rules: z.array(federationRuleSchema).default([]),
  default: z
    .strictObject({
      serve: serveMode.default("error"),
      cache: z.boolean().default(false),
      sign: signSchema.optional(),
      deny: z.boolean().default(false),
    })
    .default({ serve: "error", cache: false, deny: false }),
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
    })
    .default({ timeout: 30_000, cacheTtl: 168 * 3_600_000, cacheMaxBytes: 10 * 1024 ** 3, allowPrivateNetworks: false }),
  privateRepositories: z.enum(["deny", "warn", "allow"]).default("warn"),
  /** Until access control decides it, which repositories count as private (globs). */
  privateRepositoryPatterns: z.array(z.string()).default([]),
  requireClientSupport: z.boolean().default(false),
});

export type FederationConfig = z.output<typeof federationConfigSchema>;
export type FederationRule = z.output<typeof federationRuleSchema>;
