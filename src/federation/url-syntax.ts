/**
 * The URL checks every foreign layer URL must pass, whatever the policy: an
 * absolute RFC 3986 URL, validated as written (rfc3986.ts), with an allowed
 * scheme, a host, no userinfo (credentials must never live in a manifest),
 * no fragment, and a canonical form (canonical-url.ts).
 */
import { canonicalizeUrl } from "./canonical-url.js";

export type UrlProblem = { url: string; reason: string };

export function checkUrlSyntax(url: string, schemes: readonly string[]): UrlProblem | null {
  const canonical = canonicalizeUrl(url, schemes);
  return canonical.ok ? null : { url, reason: canonical.reason };
}
