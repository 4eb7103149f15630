/**
 * Repository names and references (distribution-spec 1.1, "Pulling manifests").
 */
import { RegistryError } from "./errors.js";
import { parseDigest, type ParsedDigest } from "./digest.js";

// distribution-spec: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
const NAME_COMPONENT = "[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*";
const NAME_GRAMMAR = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);
const TAG_GRAMMAR = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

/** Clients are required to support names of at least 255 characters; we cap there too. */
export const MAX_NAME_LENGTH = 255;

export function isValidRepositoryName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && NAME_GRAMMAR.test(name);
}

export function assertRepositoryName(name: string): void {
  if (isValidRepositoryName(name)) return;
  const reason =
    name.length > MAX_NAME_LENGTH
      ? `is longer than ${MAX_NAME_LENGTH} characters`
      : "must be lowercase path components of [a-z0-9] separated by '.', '_', '__' or '-', joined by '/'";
  throw new RegistryError("NAME_INVALID", `invalid repository name: ${reason}`, {
    detail: { name: name.slice(0, MAX_NAME_LENGTH + 1) },
  });
}

export function isValidTag(tag: string): boolean {
  return TAG_GRAMMAR.test(tag);
}

export type ManifestReference = { kind: "tag"; tag: string } | { kind: "digest"; digest: ParsedDigest };

/** A manifest reference in a URL is a digest when it contains ':', otherwise a tag. */
export function parseManifestReference(reference: string): ManifestReference {
  if (reference.includes(":")) return { kind: "digest", digest: parseDigest(reference) };
  return { kind: "tag", tag: parseTag(reference) };
}

/** A tag a client asks to set (in the path or a `tag` query parameter): 400 MANIFEST_INVALID unless it fits the grammar. */
export function parseTag(tag: string): string {
  if (isValidTag(tag)) return tag;
  throw new RegistryError(
    "MANIFEST_INVALID",
    "invalid tag: a tag is 1-128 characters of [A-Za-z0-9_.-] and cannot start with '.' or '-'",
    { status: 400, detail: { tag: tag.slice(0, 130) } },
  );
}

/**
 * For GET/HEAD/DELETE: a tag that breaks the grammar cannot name anything, so
 * it is simply unknown (404), as the conformance suite expects for
 * `/manifests/.INVALID_MANIFEST_NAME`. Malformed digests stay 400.
 */
export function parseReferenceForLookup(reference: string): ManifestReference {
  if (reference.includes(":") || isValidTag(reference)) return parseManifestReference(reference);
  throw new RegistryError("MANIFEST_UNKNOWN", "manifest unknown: the reference is not a valid tag or digest", {
    detail: { reference: reference.slice(0, 130) },
  });
}
