/**
 * Signed redirect URLs (docs/federation.md): an HMAC and an expiry in the
 * query string, as CDNs do. The registry appends two query parameters:
 *
 *   <url>[?|&]ferry-expires=<unix seconds>&ferry-signature=<base64url HMAC-SHA256>
 *
 * The HMAC is computed with the rule's secret over every character of the
 * final URL that precedes "&ferry-signature=" (or "?ferry-signature="), i.e.
 * the original URL plus the expiry. A CDN or origin verifies by recomputing
 * it over the same prefix, comparing in constant time, and refusing the
 * request once `ferry-expires` is in the past. `verifySignedUrl` below is the
 * reference implementation (docs/federation.md has a shell version).
 */
import { createHmac, timingSafeEqual } from "node:crypto";

export const EXPIRES_PARAM = "ferry-expires";
export const SIGNATURE_PARAM = "ferry-signature";

export function signUrl(url: string, secret: string, expiresInMs: number, now = Date.now()): string {
  const expires = Math.floor((now + expiresInMs) / 1000);
  const withExpiry = `${url}${url.includes("?") ? "&" : "?"}${EXPIRES_PARAM}=${expires}`;
  return `${withExpiry}&${SIGNATURE_PARAM}=${hmac(secret, withExpiry)}`;
}

export type SignatureCheck = { valid: true; expires: number } | { valid: false; reason: string };

export function verifySignedUrl(signedUrl: string, secret: string, now = Date.now()): SignatureCheck {
  const marker = `&${SIGNATURE_PARAM}=`;
  const at = signedUrl.lastIndexOf(marker);
  if (at === -1) return { valid: false, reason: "no signature" };
  const signed = signedUrl.slice(0, at);
  const given = Buffer.from(signedUrl.slice(at + marker.length), "utf8");
  const expected = Buffer.from(hmac(secret, signed), "utf8");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { valid: false, reason: "bad signature" };
  const match = new RegExp(`[?&]${EXPIRES_PARAM}=(\\d+)$`).exec(signed);
  if (!match) return { valid: false, reason: "no expiry" };
  const expires = Number(match[1]);
  if (expires * 1000 < now) return { valid: false, reason: "expired" };
  return { valid: true, expires };
}

function hmac(secret: string, text: string): string {
  return createHmac("sha256", secret).update(text, "utf8").digest("base64url");
}
