/**
 * The `auth` config section. Absent: the registry is open (and says so at
 * start-up). Present: deny by default; `rules`, `public` and `admins` grant.
 * docs/auth.md describes every key with a complete example.
 */
import { z } from "zod";
import { duration } from "../config/types.js";
import { compileRepositoryPattern } from "./glob.js";

/** bcrypt only: `$2a$`, `$2b$` or `$2y$`, cost, 22 characters of salt, 31 of hash. */
export const BCRYPT_HASH = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/;

const bcryptHash = z
  .string()
  .regex(BCRYPT_HASH, "must be a bcrypt hash ($2y$/$2a$/$2b$), e.g. from `ferry user add` or `htpasswd -nB NAME`");

const name = z.string().min(1).max(256);

const repositoryPattern = z.string().superRefine((pattern, ctx) => {
  try {
    compileRepositoryPattern(pattern);
  } catch (error) {
    ctx.addIssue({ code: "custom", message: (error as Error).message });
  }
});

export const repositoryActionSchema = z.enum(["pull", "push", "delete", "*"]);

const ruleSchema = z.strictObject({
  /** Globs: `*` is one path segment, `**` any number of segments. */
  repositories: z.array(repositoryPattern).min(1),
  /** User names; `*` means every authenticated user. */
  users: z.array(name).default([]),
  groups: z.array(name).default([]),
  actions: z.array(repositoryActionSchema).min(1),
});

const trustedIssuerSchema = z
  .strictObject({
    /** The `iss` claim this issuer writes. */
    issuer: z.string().min(1),
    /** The `aud` its tokens must carry; defaults to `auth.token.service`. */
    audience: z.string().min(1).optional(),
    /** PEM file with one or more public keys or certificates. */
    publicKey: z.string().min(1).optional(),
    /** JWKS file (JSON Web Key Set). */
    jwks: z.string().min(1).optional(),
    /** JWKS URL, fetched and cached. */
    jwksUrl: z.url().optional(),
  })
  .refine((t) => [t.publicKey, t.jwks, t.jwksUrl].filter((v) => v !== undefined).length === 1, {
    message: "set exactly one of publicKey, jwks or jwksUrl",
  });

const tokenSchema = z.strictObject({
  /** Serve the Docker token service at /token. */
  enabled: z.boolean().default(true),
  /** Token endpoint URL announced in challenges; default: http://<request Host>/token. */
  realm: z.url().optional(),
  service: z.string().min(1).default("ferry"),
  issuer: z.string().min(1).default("ferry"),
  expires: duration.default(5 * 60_000),
  /** Lifetime of refresh tokens (offline_token / access_type=offline); 0 disables them. */
  refreshExpires: duration.default(30 * 24 * 3_600_000),
  /** PKCS#8 PEM private key; default: generated once into <data>/auth/. */
  signingKey: z.string().min(1).optional(),
  /**
   * Earlier (or next) signing keys: PEM files whose tokens are still accepted and
   * which /token/jwks still lists, so that a key rotation logs nobody out
   * (docs/deployment.md "Rotating the token signing key").
   */
  verifyKeys: z.array(z.string().min(1)).default([]),
  algorithm: z.enum(["ES256", "RS256"]).default("ES256"),
  clockSkew: duration.default(60_000),
  /** External token issuers whose tokens this registry accepts. */
  trust: z.array(trustedIssuerSchema).default([]),
});

const rateLimitSchema = z.strictObject({
  window: duration.default(5 * 60_000),
  /** Failed logins per user name within `window` before further attempts get 429. */
  perUser: z.number().int().min(1).default(10),
  /**
   * Failed logins per client address within `window`; past it the address's
   * failures get 429, but a correct password for a user who is not locked still works.
   */
  perAddress: z.number().int().min(1).default(30),
  /** Most user names (and, separately, addresses) whose failures are remembered; bounds memory. */
  maxEntries: z.number().int().min(100).max(10_000_000).default(100_000),
});

export const authConfigSchema = z.strictObject({
  /** Apache htpasswd file with bcrypt entries (`htpasswd -B`, `ferry user add`). */
  htpasswd: z.string().min(1).optional(),
  users: z
    .record(name, z.strictObject({ passwordHash: bcryptHash.optional(), groups: z.array(name).default([]) }))
    .default({}),
  /** Group name → member user names (adds to users.<name>.groups). */
  groups: z.record(name, z.array(name)).default({}),
  rules: z.array(ruleSchema).default([]),
  /** Repositories anyone may pull without credentials. */
  public: z.array(repositoryPattern).default([]),
  /** Admins may do everything: every repository, the whole catalog, /metrics, /ferry/v1. */
  admins: z
    .strictObject({ users: z.array(name).default([]), groups: z.array(name).default([]) })
    .default({ users: [], groups: [] }),
  token: tokenSchema.default(tokenSchema.parse({})),
  rateLimit: rateLimitSchema.default(rateLimitSchema.parse({})),
});

export type AuthConfig = z.output<typeof authConfigSchema>;
export type TrustedIssuerConfig = z.output<typeof trustedIssuerSchema>;
export type AuthRule = z.output<typeof ruleSchema>;
