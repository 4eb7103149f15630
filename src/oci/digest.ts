/**
 * Digests (OCI image-spec "Digests"): `algorithm ":" encoded`.
 * sha256 is required and sha512 supported; other syntactically valid
 * algorithms are refused as unsupported rather than mis-parsed.
 */
import { createHash, type Hash } from "node:crypto";
import { RegistryError } from "./errors.js";

export type DigestAlgorithm = "sha256" | "sha512";

export interface ParsedDigest {
  algorithm: DigestAlgorithm;
  encoded: string;
  /** The canonical string form `algorithm:encoded`. */
  digest: string;
}

// image-spec: algorithm-component [+._-] separated; encoded [a-zA-Z0-9=_-]+
const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const ENCODED_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };

/** Parses a digest or throws DIGEST_INVALID with a message that says which rule failed. */
export function parseDigest(value: string): ParsedDigest {
  if (!DIGEST_GRAMMAR.test(value)) {
    throw new RegistryError("DIGEST_INVALID", `"${truncate(value)}" is not a digest of the form algorithm:hex`, {
      detail: { digest: truncate(value) },
    });
  }
  const colon = value.indexOf(":");
  const algorithm = value.slice(0, colon);
  const encoded = value.slice(colon + 1);
  if (algorithm !== "sha256" && algorithm !== "sha512") {
    throw new RegistryError("DIGEST_INVALID", `digest algorithm "${algorithm}" is not supported (use sha256 or sha512)`, {
      detail: { digest: truncate(value), supported: ["sha256", "sha512"] },
    });
  }
  if (encoded.length !== ENCODED_LENGTH[algorithm] || !/^[a-f0-9]+$/.test(encoded)) {
    throw new RegistryError(
      "DIGEST_INVALID",
      `a ${algorithm} digest must be ${ENCODED_LENGTH[algorithm]} lowercase hex characters`,
      { detail: { digest: truncate(value) } },
    );
  }
  return { algorithm, encoded, digest: value };
}

/**
 * The `digest-algorithm` parameter of an upload POST (distribution-spec main,
 * "the algorithm the registry should use for the blob"): one Ferry can verify,
 * else 400 DIGEST_INVALID at once rather than after the client sent the bytes.
 */
export function parseDigestAlgorithm(value: string): DigestAlgorithm {
  if (value === "sha256" || value === "sha512") return value;
  throw new RegistryError("DIGEST_INVALID", `digest algorithm "${truncate(value)}" is not supported (use sha256 or sha512)`, {
    detail: { algorithm: truncate(value), supported: ["sha256", "sha512"] },
  });
}

export function isValidDigest(value: string): boolean {
  try {
    parseDigest(value);
    return true;
  } catch {
    return false;
  }
}

export function createDigester(algorithm: DigestAlgorithm): Hash {
  return createHash(algorithm);
}

export function digestOf(data: Buffer | string, algorithm: DigestAlgorithm = "sha256"): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest("hex")}`;
}

function truncate(value: string): string {
  return value.length > 200 ? `${value.slice(0, 200)}…` : value;
}
