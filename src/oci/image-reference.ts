/**
 * Image references as people type them: `[host[:port]/]repository[:tag][@digest]`
 * (the grammar of distribution's reference package). The first path component
 * is a registry host when it contains '.' or ':' or is `localhost`, as Docker
 * decides; otherwise the reference names Docker Hub (`docker.io`, with
 * `library/` for single-component names).
 */
import { RegistryError } from "./errors.js";
import { parseDigest } from "./digest.js";
import { isValidRepositoryName, isValidTag } from "./reference.js";

export const DEFAULT_REGISTRY = "docker.io";

export interface ImageReference {
  /** host or host:port, as typed (IPv6 literals keep their brackets). */
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

function invalid(value: string, reason: string): never {
  throw new RegistryError("NAME_INVALID", `invalid image reference "${value.slice(0, 300)}": ${reason}`, {
    detail: { reference: value.slice(0, 300) },
  });
}

export function isRegistryHost(component: string): boolean {
  return component.includes(".") || component.includes(":") || component === "localhost" || component.startsWith("[");
}

/** Parses `host:port/repo:tag@digest`; throws NAME_INVALID naming the part that is wrong. */
export function parseImageReference(value: string): ImageReference {
  if (value === "") invalid(value, "it is empty");
  let rest = value;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    try {
      parseDigest(digest);
    } catch (error) {
      invalid(value, (error as Error).message);
    }
  }
  let registry = DEFAULT_REGISTRY;
  const slash = rest.indexOf("/");
  if (slash > 0 && isRegistryHost(rest.slice(0, slash))) {
    registry = rest.slice(0, slash);
    rest = rest.slice(slash + 1);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isValidTag(tag)) invalid(value, `"${tag}" is not a valid tag`);
  }
  let repository = rest;
  if (registry === DEFAULT_REGISTRY && !repository.includes("/")) repository = `library/${repository}`;
  if (!isValidRepositoryName(repository)) invalid(value, `"${repository}" is not a valid repository name`);
  const reference: ImageReference = { registry, repository };
  if (tag !== undefined) reference.tag = tag;
  if (digest !== undefined) reference.digest = digest;
  return reference;
}

/** The manifest reference to use in a URL: the digest when there is one, else the tag, else "latest". */
export function manifestReferenceOf(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? "latest";
}

export function formatImageReference(ref: ImageReference): string {
  let out = `${ref.registry}/${ref.repository}`;
  if (ref.tag !== undefined) out += `:${ref.tag}`;
  if (ref.digest !== undefined) out += `@${ref.digest}`;
  return out;
}

/** Parses a `host[:port]/repository` with no tag or digest (for `ferry tags`). */
export function parseRepositoryReference(value: string): ImageReference {
  const ref = parseImageReference(value);
  if (ref.tag !== undefined || ref.digest !== undefined) invalid(value, "a repository takes no tag or digest");
  return ref;
}
