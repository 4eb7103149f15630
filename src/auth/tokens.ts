/**
 * Signed tokens (Docker registry token auth spec, "Token Authentication
 * Implementation"): access tokens this registry issues at /token, refresh
 * tokens for `offline_token`, and verification of both ours and those of
 * trusted external issuers (PEM keys/certificates or a JWKS).
 *
 * Verification pins the algorithm family to the key (never `none`, never HS*
 * with a public key), and checks signature, `iss`, `aud`, `exp` and `nbf`
 * with the configured clock skew.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, X509Certificate, type KeyObject } from "node:crypto";
import { link, mkdir, readFile, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  calculateJwkThumbprint,
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  jwtVerify,
  SignJWT,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
} from "jose";
import type { AuthConfig, TrustedIssuerConfig } from "./config.js";
import { accessClaim, type Scope } from "./scope.js";
import { keyStoreOf, StoredKeySet, type SigningKey } from "./key-set.js";
import type { MetaStore } from "../metadata/meta-store.js";
import { threadId } from "node:worker_threads";

type TokenConfig = AuthConfig["token"];

const ASYMMETRIC_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];

export class TokenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TokenError";
  }
}

export interface VerifiedToken {
  /** Null for anonymous tokens (`sub` empty). */
  subject: string | null;
  access: Scope[];
  /** Issued by this registry (its subject is one of our users). */
  local: boolean;
}

export type { SigningKey } from "./key-set.js";

function algorithmsFor(key: KeyObject): string[] {
  switch (key.asymmetricKeyType) {
    case "rsa":
      return ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];
    case "rsa-pss":
      return ["PS256", "PS384", "PS512"];
    case "ec": {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      if (curve === "prime256v1" || curve === "P-256") return ["ES256"];
      if (curve === "secp384r1" || curve === "P-384") return ["ES384"];
      if (curve === "secp521r1" || curve === "P-521") return ["ES512"];
      return [];
    }
    case "ed25519":
      return ["EdDSA"];
    default:
      return [];
  }
}

/**
 * Our own tokens under the shared key set: the key the token names is tried
 * first (reloading the set when it is new here: another replica rotated),
 * then the others still accepted and auth.token.verifyKeys.
 */
function sharedKeyVerifier(keys: StoredKeySet, extra: KeyObject[], issuer: string, audience: string): Verifier {
  return {
    issuer,
    audience,
    async verify(token, options) {
      let kid: string | undefined;
      try {
        kid = decodeProtectedHeader(token).kid;
      } catch {
        kid = undefined;
      }
      await keys.ensureKnown(kid);
      const accepted = keys.accepted();
      const named = accepted.filter((key) => key.kid === kid);
      const others = accepted.filter((key) => key.kid !== kid);
      return keyListVerifier([...named, ...others].map((key) => key.publicKey).concat(extra), issuer, audience).verify(token, options);
    },
  };
}

/** Loads the configured signing key, or the one generated into <data>/auth/ (created on first start). */
export async function loadSigningKey(config: TokenConfig, dataDir: string): Promise<SigningKey> {
  let pem: string;
  if (config.signingKey) {
    pem = await readFile(config.signingKey, "utf8").catch((error: NodeJS.ErrnoException) => {
      throw new Error(`cannot read auth.token.signingKey ${config.signingKey}: ${error.code ?? error.message}`);
    });
  } else {
    const dir = join(dataDir, "auth");
    const file = join(dir, `token-signing-key-${config.algorithm.toLowerCase()}.pem`);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    pem = await readFile(file, "utf8").catch(async (error: NodeJS.ErrnoException) => {
      if (error.code !== "ENOENT") throw error;
      const pair = config.algorithm === "ES256" ? generateKeyPairSync("ec", { namedCurve: "P-256" }) : generateKeyPairSync("rsa", { modulusLength: 3072 });
      const generated = pair.privateKey.export({ format: "pem", type: "pkcs8" }) as string;
      // Written aside, then linked into place: link() fails if the name exists, so with several
      // workers starting at once the first key wins whole and nobody reads a half-written file.
      const temp = `${file}.${process.pid}.${threadId}.tmp`;
      await writeFile(temp, generated, { mode: 0o600 });
      try {
        await link(temp, file);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      } finally {
        await unlink(temp);
      }
      return readFile(file, "utf8");
    });
  }
  const privateKey = createPrivateKey(pem);
  const publicKey = createPublicKey(privateKey);
  const algorithm = publicKey.asymmetricKeyType === "rsa" ? "RS256" : algorithmsFor(publicKey)[0] === "ES256" ? "ES256" : undefined;
  if (!algorithm) throw new Error("auth.token.signingKey must be an RSA or EC P-256 private key (PKCS#8 PEM)");
  const kid = await calculateJwkThumbprint(publicKey.export({ format: "jwk" }) as JWK);
  return { privateKey, publicKey, algorithm, kid };
}

/** The public halves of auth.token.verifyKeys (private or public PEM, or certificates), with their JWK thumbprints. */
async function loadVerifyKeys(files: string[]): Promise<Array<{ publicKey: KeyObject; kid: string }>> {
  const keys: Array<{ publicKey: KeyObject; kid: string }> = [];
  for (const file of files) {
    const pem = await readFile(file, "utf8").catch((error: NodeJS.ErrnoException) => {
      throw new Error(`cannot read auth.token.verifyKeys ${file}: ${error.code ?? error.message}`);
    });
    for (const publicKey of publicKeysFromPem(pem, file)) {
      if (algorithmsFor(publicKey).length === 0) throw new Error(`auth.token.verifyKeys ${file}: not an RSA or EC key`);
      keys.push({ publicKey, kid: await calculateJwkThumbprint(publicKey.export({ format: "jwk" }) as JWK) });
    }
  }
  return keys;
}

/** Every public key in a PEM file: SPKI keys, certificates (e.g. distribution's rootcertbundle) or private keys. */
export function publicKeysFromPem(pem: string, file: string): KeyObject[] {
  const blocks = pem.match(/-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----/g) ?? [];
  const keys = blocks.map((block) =>
    block.startsWith("-----BEGIN CERTIFICATE-----") ? new X509Certificate(block).publicKey : createPublicKey(block),
  );
  if (keys.length === 0) throw new Error(`${file} holds no PEM public key or certificate`);
  return keys;
}

interface ClaimOptions {
  issuer: string;
  audience: string;
  clockTolerance: number;
  currentDate: Date;
}

interface Verifier {
  issuer: string;
  audience: string;
  verify(token: string, options: ClaimOptions): Promise<JWTPayload>;
}

function keyListVerifier(keys: KeyObject[], issuer: string, audience: string): Verifier {
  return {
    issuer,
    audience,
    async verify(token, options) {
      let lastError: unknown = new TokenError("no key");
      for (const key of keys) {
        try {
          return (await jwtVerify(token, key, { ...options, algorithms: algorithmsFor(key), requiredClaims: ["exp"] })).payload;
        } catch (error) {
          lastError = error;
          // Only a signature mismatch is worth trying the next key for.
          if ((error as { code?: string }).code !== "ERR_JWS_SIGNATURE_VERIFICATION_FAILED") break;
        }
      }
      throw lastError;
    },
  };
}

function jwksVerifier(getKey: JWTVerifyGetKey, issuer: string, audience: string): Verifier {
  return {
    issuer,
    audience,
    async verify(token, options) {
      return (await jwtVerify(token, getKey, { ...options, algorithms: ASYMMETRIC_ALGORITHMS, requiredClaims: ["exp"] })).payload;
    },
  };
}

/** A trusted issuer's key file, with the setting named when it cannot be read (a bare ENOENT says neither which key nor why). */
async function readTrustFile(key: "publicKey" | "jwks", file: string): Promise<string> {
  return readFile(file, "utf8").catch((error: NodeJS.ErrnoException) => {
    throw new Error(`cannot read auth.token.trust[].${key} ${file}: ${error.code ?? error.message}`);
  });
}

async function trustedVerifier(trust: TrustedIssuerConfig, defaultAudience: string): Promise<Verifier> {
  const audience = trust.audience ?? defaultAudience;
  if (trust.publicKey) {
    const pem = await readTrustFile("publicKey", trust.publicKey);
    return keyListVerifier(publicKeysFromPem(pem, trust.publicKey), trust.issuer, audience);
  }
  if (trust.jwks) {
    let jwks: { keys?: unknown };
    try {
      jwks = JSON.parse(await readTrustFile("jwks", trust.jwks)) as { keys?: unknown };
    } catch (error) {
      if (!(error instanceof SyntaxError)) throw error;
      throw new Error(`auth.token.trust[].jwks ${trust.jwks} is not JSON: ${error.message}`);
    }
    if (!Array.isArray(jwks?.keys)) throw new Error(`${trust.jwks} is not a JWKS (no "keys" array)`);
    return jwksVerifier(createLocalJWKSet(jwks as { keys: JWK[] }), trust.issuer, audience);
  }
  return jwksVerifier(createRemoteJWKSet(new URL(trust.jwksUrl!)), trust.issuer, audience);
}

export interface IssuedToken {
  token: string;
  expiresIn: number;
  issuedAt: string;
}

export class TokenService {
  private constructor(
    private readonly config: TokenConfig,
    private readonly signing: SigningKey | null,
    private readonly verifiers: Map<string, Verifier>,
    private readonly now: () => number,
    private readonly verifyKeys: Array<{ publicKey: KeyObject; kid: string }> = [],
    private readonly shared: StoredKeySet | null = null,
  ) {}

  /**
   * `meta`: the metadata store whose shared key set signs when no
   * auth.token.signingKey is configured (key-set.ts); without one (or a
   * driver that keeps no keys), the key generated into the data directory.
   */
  static async create(config: TokenConfig, dataDir: string, now: () => number = Date.now, meta?: MetaStore): Promise<TokenService> {
    const store = config.enabled && !config.signingKey ? keyStoreOf(meta) : undefined;
    const lifetime = Math.max(config.expires, config.refreshExpires) + config.clockSkew;
    // The key an older Ferry generated into this data directory becomes generation 1 (an upgrade logs nobody out).
    const legacy = () => readFile(join(dataDir, "auth", `token-signing-key-${config.algorithm.toLowerCase()}.pem`), "utf8").catch(() => null);
    const shared = store ? await StoredKeySet.open(store, config.algorithm, lifetime, now, legacy) : null;
    const signing = config.enabled && !shared ? await loadSigningKey(config, dataDir) : null;
    const verifyKeys = signing || shared ? await loadVerifyKeys(config.verifyKeys) : [];
    const verifiers = new Map<string, Verifier>();
    if (shared) verifiers.set(config.issuer, sharedKeyVerifier(shared, verifyKeys.map((k) => k.publicKey), config.issuer, config.service));
    else if (signing) verifiers.set(config.issuer, keyListVerifier([signing.publicKey, ...verifyKeys.map((k) => k.publicKey)], config.issuer, config.service));
    for (const trust of config.trust) {
      if (verifiers.has(trust.issuer)) throw new Error(`auth.token.trust: issuer "${trust.issuer}" is listed twice or is this registry's own issuer`);
      verifiers.set(trust.issuer, await trustedVerifier(trust, config.service));
    }
    return new TokenService(config, signing, verifiers, now, verifyKeys, shared);
  }

  /** Whether this registry issues tokens (a configured, generated or shared key). */
  private get signs(): boolean {
    return this.signing !== null || this.shared !== null;
  }

  get service(): string {
    return this.config.service;
  }

  get refreshEnabled(): boolean {
    return this.signs && this.config.refreshExpires > 0;
  }

  /** The public halves of every key our tokens are accepted under (signing first), for services that trust our tokens. */
  /** publicJwks() over a key set at most a second old (other replicas and threads may have rotated). */
  async freshPublicJwks(): Promise<{ keys: JWK[] }> {
    await this.shared?.fresh();
    return this.publicJwks();
  }

  publicJwks(): { keys: JWK[] } {
    const own: SigningKey[] = this.shared ? this.shared.accepted() : this.signing ? [this.signing] : [];
    if (own.length === 0) return { keys: [] };
    const kids = new Set(own.map((key) => key.kid));
    const others = this.verifyKeys
      .filter((key) => !kids.has(key.kid))
      .map((key) => ({ ...(key.publicKey.export({ format: "jwk" }) as JWK), kid: key.kid, alg: algorithmsFor(key.publicKey)[0], use: "sig" }));
    return { keys: [...own.map((key) => ({ ...(key.publicKey.export({ format: "jwk" }) as JWK), kid: key.kid, alg: key.algorithm, use: "sig" })), ...others] };
  }

  private async sign(claims: JWTPayload, subject: string, lifetimeMs: number): Promise<IssuedToken> {
    const signing = this.shared ? await this.shared.current() : this.signing;
    if (!signing) throw new TokenError("this registry issues no tokens (auth.token.enabled is false)");
    const iat = Math.floor(this.now() / 1000);
    const expiresIn = Math.max(1, Math.floor(lifetimeMs / 1000));
    // Claims are whole seconds and `iat` is rounded down, so `iat + expiresIn`
    // could leave a token (almost) a second less than the `expires_in` the
    // client was promised; rounding the expiry up keeps the promise.
    const exp = Math.ceil(this.now() / 1000) + expiresIn;
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: signing.algorithm, kid: signing.kid, typ: "JWT" })
      .setIssuer(this.config.issuer)
      .setSubject(subject)
      .setAudience(this.config.service)
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(exp)
      .setJti(randomUUID())
      .sign(signing.privateKey);
    return { token, expiresIn, issuedAt: new Date(iat * 1000).toISOString() };
  }

  issueAccess(subject: string | null, access: Scope[]): Promise<IssuedToken> {
    return this.sign({ access }, subject ?? "", this.config.expires);
  }

  /** Refresh tokens carry a fingerprint of the user's password hash: a new password revokes them. */
  issueRefresh(subject: string, fingerprint: string): Promise<IssuedToken> {
    return this.sign({ ferry_refresh: fingerprint }, subject, this.config.refreshExpires);
  }

  private async verifyAny(token: string): Promise<{ payload: JWTPayload; issuer: string }> {
    let claimedIssuer: unknown;
    try {
      claimedIssuer = decodeJwt(token).iss;
    } catch {
      throw new TokenError("not a JWT");
    }
    const verifier = typeof claimedIssuer === "string" ? this.verifiers.get(claimedIssuer) : undefined;
    if (!verifier) throw new TokenError("issued by an issuer this registry does not trust");
    try {
      const payload = await verifier.verify(token, {
        issuer: verifier.issuer,
        audience: verifier.audience,
        clockTolerance: Math.floor(this.config.clockSkew / 1000),
        currentDate: new Date(this.now()),
      });
      return { payload, issuer: verifier.issuer };
    } catch (error) {
      throw new TokenError(describeJoseError(error));
    }
  }

  async verifyAccess(token: string): Promise<VerifiedToken> {
    const { payload, issuer } = await this.verifyAny(token);
    if (payload.ferry_refresh !== undefined) throw new TokenError("a refresh token is not an access token");
    return {
      subject: typeof payload.sub === "string" && payload.sub !== "" ? payload.sub : null,
      access: accessClaim(payload.access),
      local: this.signs && issuer === this.config.issuer,
    };
  }

  async verifyRefresh(token: string): Promise<{ subject: string; fingerprint: string }> {
    const { payload, issuer } = await this.verifyAny(token);
    if (issuer !== this.config.issuer || !this.signs) throw new TokenError("refresh tokens are only accepted from this registry");
    if (typeof payload.ferry_refresh !== "string" || typeof payload.sub !== "string" || payload.sub === "") {
      throw new TokenError("not a refresh token");
    }
    return { subject: payload.sub, fingerprint: payload.ferry_refresh };
  }
}

function describeJoseError(error: unknown): string {
  const code = (error as { code?: string }).code;
  const claim = (error as { claim?: string }).claim;
  switch (code) {
    case "ERR_JWT_EXPIRED":
      return "expired";
    case "ERR_JWS_SIGNATURE_VERIFICATION_FAILED":
      return "bad signature";
    case "ERR_JOSE_ALG_NOT_ALLOWED":
      return "signing algorithm not accepted";
    case "ERR_JWT_CLAIM_VALIDATION_FAILED":
      return claim === "nbf" ? "not valid yet" : `claim ${claim ?? "?"} is wrong`;
    case "ERR_JWKS_NO_MATCHING_KEY":
      return "no key in the issuer's key set matches";
    default:
      return "malformed or unverifiable";
  }
}
