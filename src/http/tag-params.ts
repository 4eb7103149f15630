/**
 * `tag` query parameters on a manifest PUT (distribution-spec main, "Pushing
 * Manifests"): "When pushing a manifest by digest, the registry MAY support the
 * pushing of tags specified by addition of `tag` query parameters." A registry
 * that does SHOULD take at least 10 per request, MAY answer 414 to too many,
 * and MUST name each accepted tag in an `OCI-Tag` response header.
 *
 * This module only reads and checks the parameters; the push applies them in
 * the same metadata transaction as the manifest, so either all are set or none.
 */
import { RegistryError } from "../oci/errors.js";
import { parseTag, type ManifestReference } from "../oci/reference.js";

/**
 * Tags one request may set. Ten is the spec's floor; 100 tags of the longest
 * legal length (128) still fit the default 16 KiB header limit
 * (`http.maxHeaderBytes`) in the request line, and in the OCI-Tag answer,
 * which a Node client reads with the same limit.
 */
export const MAX_TAG_PARAMS = 100;

/**
 * The distinct tags named by `tag` parameters, in request order (none: []).
 * Refuses them on a push by tag (the spec defines them only for a push by
 * digest, and silently setting other tags than the path names would surprise),
 * more than MAX_TAG_PARAMS (414), and any that breaks the tag grammar (400),
 * all before the body is read.
 */
export function tagParams(query: URLSearchParams, reference: ManifestReference): string[] {
  const given = query.getAll("tag");
  if (given.length === 0) return [];
  if (reference.kind === "tag") {
    throw new RegistryError("MANIFEST_INVALID", "tag query parameters are only accepted on a push by digest: PUT /v2/<name>/manifests/<digest>?tag=<tag>", {
      detail: { reference: reference.tag },
    });
  }
  const tags = [...new Set(given)];
  if (tags.length > MAX_TAG_PARAMS) {
    throw new RegistryError("MANIFEST_INVALID", `too many tag query parameters: at most ${MAX_TAG_PARAMS} per request`, {
      status: 414,
      detail: { limit: MAX_TAG_PARAMS, given: tags.length },
    });
  }
  return tags.map(parseTag);
}
