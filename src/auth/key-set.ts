/**
 * The token signing key set every replica shares through the metadata store
 * (used when `auth.token.signingKey` is not configured). Keys are numbered
 * generations; the highest signs, and every older one keeps verifying until
 * the last token it can have signed has expired, so a rotation logs nobody
 * out.
 *
 * - First start: a replica that finds no key generates one and inserts it as
 *   generation 1 if absent; two replicas starting at once both read back the
 *   one that got in.
 * - Rotation (`ferry token rotate`, rotateSigningKey): inserts generation
 *   max+1. Each replica reloads the set at most RELOAD_MS after its last load
 *   before signing, and at once when a token names a key it does not know,
 *   so replicas switch within RELOAD_MS and never reject each other's tokens.
 * - An old key is accepted (and listed at /token/jwks) until its successor's
 *   creation + the longest token lifetime + clock skew + RELOAD_MS (a replica
 *   may sign with it that long after the rotation).
 *
 * Private keys sit in the database as PKCS#8 PEM (docs/security.md): they are
 * never logged and never leave this module except to sign.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { calculateJwkThumbprint, type JWK } from "jose";
import type { MetaStore, SigningKeyRecord } from "../metadata/meta-store.js";

/** How stale a replica's copy of the key set may be before it signs. */
export const RELOAD_MS = 30_000;
/** At most one reload per this interval for tokens naming an unknown key (a forged kid must not hammer the database). */
const UNKNOWN_KID_RELOAD_MS = 1_000;
/** How stale the set /token/jwks lists may be (one store read per second at most, whatever the request rate). */
const FRESH_LIST_MS = 1_000;

export interface SigningKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  algorithm: "ES256" | "RS256";
  kid: string;
}

export type KeyStore = Required<Pick<MetaStore, "listSigningKeys" | "addSigningKey">>;

export function keyStoreOf(meta: MetaStore | undefined): KeyStore | undefined {
  return meta?.listSigningKeys && meta.addSigningKey ? (meta as KeyStore) : undefined;
}

/** A fresh private key as PEM with its record fields (kid from the public key). */
export async function generateSigningKey(algorithm: "ES256" | "RS256", generation: number, now: number): Promise<SigningKeyRecord> {
  const pair = algorithm === "ES256" ? generateKeyPairSync("ec", { namedCurve: "P-256" }) : generateKeyPairSync("rsa", { modulusLength: 3072 });
  const privateKey = pair.privateKey.export({ format: "pem", type: "pkcs8" }) as string;
  const kid = await calculateJwkThumbprint(pair.publicKey.export({ format: "jwk" }) as JWK);
  return { generation, kid, algorithm, privateKey, createdAt: now };
}

/** A record for an existing PKCS#8 PEM key (EC P-256 or RSA). */
export async function importSigningKey(pem: string, generation: number, now: number): Promise<SigningKeyRecord> {
  const privateKey = createPrivateKey(pem);
  const publicKey = createPublicKey(privateKey);
  const algorithm = publicKey.asymmetricKeyType === "rsa" ? "RS256" : publicKey.asymmetricKeyDetails?.namedCurve === "prime256v1" ? "ES256" : undefined;
  if (!algorithm) throw new Error("the data directory's token signing key is not an RSA or EC P-256 key");
  const kid = await calculateJwkThumbprint(publicKey.export({ format: "jwk" }) as JWK);
  return { generation, kid, algorithm, privateKey: privateKey.export({ format: "pem", type: "pkcs8" }) as string, createdAt: now };
}

/** Adds a new signing generation; returns it (or, when another rotation won the same generation, the one that did). */
export async function rotateSigningKey(store: KeyStore, algorithm: "ES256" | "RS256", now: number = Date.now()): Promise<SigningKeyRecord> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const keys = await store.listSigningKeys();
    const generation = (keys[keys.length - 1]?.generation ?? 0) + 1;
    const key = await generateSigningKey(algorithm, generation, now);
    if (await store.addSigningKey(key)) return key;
  }
  throw new Error("could not add a signing key: other rotations kept winning");
}

export class StoredKeySet {
  private keys: SigningKey[] = [];
  /** Public keys still accepted, newest first. */
  private acceptedKeys: SigningKey[] = [];
  private readonly parsed = new Map<string, SigningKey>();
  private loadedAt = -Infinity;
  private loading: Promise<void> | null = null;

  private constructor(
    private readonly store: KeyStore,
    /** How long after its successor appeared a key is still accepted. */
    private readonly acceptMs: number,
    private readonly now: () => number,
  ) {}

  /**
   * Loads the set, creating generation 1 when the store holds none: from
   * `legacyPem` when given (the key an older Ferry generated into the data
   * directory, so an upgrade logs nobody out), else a fresh key.
   */
  static async open(
    store: KeyStore,
    algorithm: "ES256" | "RS256",
    tokenLifetimeMs: number,
    now: () => number = Date.now,
    legacyPem: () => Promise<string | null> = async () => null,
  ): Promise<StoredKeySet> {
    const set = new StoredKeySet(store, tokenLifetimeMs + RELOAD_MS, now);
    await set.reload();
    if (set.keys.length === 0) {
      const legacy = await legacyPem();
      await store.addSigningKey(legacy ? await importSigningKey(legacy, 1, now()) : await generateSigningKey(algorithm, 1, now()));
      await set.reload();
      if (set.keys.length === 0) throw new Error("the metadata store kept no token signing key");
    }
    return set;
  }

  /** The key to sign with, reloaded first when the copy is older than RELOAD_MS. */
  async current(): Promise<SigningKey> {
    await this.reloadIfOlder(RELOAD_MS);
    return this.keys[this.keys.length - 1]!;
  }

  /** The newest loaded key, without touching the store (for JWKS and token claims). */
  get latest(): SigningKey {
    return this.keys[this.keys.length - 1]!;
  }

  accepted(): SigningKey[] {
    return this.acceptedKeys;
  }

  /**
   * For /token/jwks: reloads when the copy is older than FRESH_LIST_MS, so a
   * rotated key is listed within about a second by every serving thread and
   * replica, not only by one that has already seen a token signed with it.
   */
  fresh(): Promise<void> {
    return this.reloadIfOlder(FRESH_LIST_MS);
  }

  /** For a token naming `kid`: reloads when the key is unknown here (throttled). */
  async ensureKnown(kid: string | undefined): Promise<void> {
    if (kid === undefined || this.acceptedKeys.some((key) => key.kid === kid)) return;
    await this.reloadIfOlder(UNKNOWN_KID_RELOAD_MS);
  }

  /** Reloads when the copy is at least `maxAgeMs` old; a store that fails leaves the copy as it was. */
  private async reloadIfOlder(maxAgeMs: number): Promise<void> {
    if (this.now() - this.loadedAt < maxAgeMs) return;
    await this.reload().catch(() => undefined);
  }

  private reload(): Promise<void> {
    this.loading ??= this.load().finally(() => (this.loading = null));
    return this.loading;
  }

  private async load(): Promise<void> {
    const records = await this.store.listSigningKeys();
    const keys: SigningKey[] = [];
    for (const record of records) {
      let key = this.parsed.get(record.kid);
      if (!key) {
        const privateKey = createPrivateKey(record.privateKey);
        key = { privateKey, publicKey: createPublicKey(privateKey), algorithm: record.algorithm, kid: record.kid };
        this.parsed.set(record.kid, key);
      }
      keys.push(key);
    }
    const now = this.now();
    const accepted: SigningKey[] = [];
    for (let i = records.length - 1; i >= 0; i--) {
      const successor = records[i + 1];
      if (successor === undefined || successor.createdAt + this.acceptMs > now) accepted.push(keys[i]!);
    }
    this.keys = keys;
    this.acceptedKeys = accepted;
    this.loadedAt = now;
  }
}
