/**
 * The distribution-spec endpoint table: which path is which resource.
 * Repository names contain slashes, so each pattern anchors on the suffix;
 * the upload patterns come before the blob pattern they would otherwise match.
 */
import { RegistryError } from "../oci/errors.js";

export type Route =
  | { kind: "base" }
  | { kind: "catalog" }
  | { kind: "tags"; name: string }
  | { kind: "manifest"; name: string; reference: string }
  | { kind: "uploads"; name: string }
  | { kind: "upload"; name: string; id: string }
  | { kind: "blob"; name: string; digest: string }
  | { kind: "referrers"; name: string; digest: string };

/** A pattern, what it builds, and a substring every path it matches contains (tested first: cheaper than the pattern). */
type Matcher = [RegExp, (m: RegExpExecArray) => Route, string];

const MATCHERS: Matcher[] = [
  [/^\/v2\/?$/, () => ({ kind: "base" }), "/v2"],
  [/^\/v2\/_catalog$/, () => ({ kind: "catalog" }), "/_catalog"],
  [/^\/v2\/(.+)\/tags\/list$/, (m) => ({ kind: "tags", name: m[1]! }), "/tags/list"],
  [/^\/v2\/(.+)\/manifests\/([^/]+)$/, (m) => ({ kind: "manifest", name: m[1]!, reference: decode(m[2]!) }), "/manifests/"],
  [/^\/v2\/(.+)\/blobs\/uploads\/?$/, (m) => ({ kind: "uploads", name: m[1]! }), "/blobs/uploads"],
  [/^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/, (m) => ({ kind: "upload", name: m[1]!, id: decode(m[2]!) }), "/blobs/uploads/"],
  [/^\/v2\/(.+)\/blobs\/([^/]+)$/, (m) => ({ kind: "blob", name: m[1]!, digest: decode(m[2]!) }), "/blobs/"],
  [/^\/v2\/(.+)\/referrers\/([^/]+)$/, (m) => ({ kind: "referrers", name: m[1]!, digest: decode(m[2]!) }), "/referrers/"],
];

export function matchRoute(path: string): Route | null {
  for (const [pattern, build, hint] of MATCHERS) {
    if (!path.includes(hint)) continue;
    const match = pattern.exec(path);
    if (match) return build(match);
  }
  return null;
}

/** Methods each resource answers (for 405 and the Allow header). */
export const ALLOWED_METHODS: Record<Route["kind"], string[]> = {
  base: ["GET", "HEAD"],
  catalog: ["GET"],
  tags: ["GET"],
  manifest: ["GET", "HEAD", "PUT", "DELETE"],
  uploads: ["POST"],
  upload: ["GET", "PATCH", "PUT", "DELETE"],
  blob: ["GET", "HEAD", "DELETE"],
  referrers: ["GET"],
};

/** Digests may arrive percent-encoded (`sha256%3A...`). */
function decode(segment: string): string {
  if (!segment.includes("%")) return segment;
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new RegistryError("NAME_INVALID", "the path contains an invalid percent-encoding", { status: 400 });
  }
}
