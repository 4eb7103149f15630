/**
 * Splits a foreign-layer URL *as written* by RFC 3986 (`scheme "://"
 * authority path-abempty ["?" query]`), before any parser gets a chance to
 * repair it. The WHATWG parser used everywhere else turns `http:x`,
 * `http:///x`, `https:////host/x` and `https://host\evil/x` into URLs with a
 * host; a client that chose such a string must get a refusal, not a repair.
 *
 * Stricter than RFC 3986 where a foreign layer URL gains nothing from the
 * freedom: a host is a DNS name (letters, digits, "-", "_", ".") or an IP
 * literal (no IPvFuture, no zone id), userinfo and fragments are refused.
 */
export interface UrlParts {
  /** As written (case not yet folded). */
  scheme: string;
  /** The host as written, percent-encoding untouched; IPv6 literals without brackets. */
  host: string;
  /** True for `[...]` literals. */
  ipv6: boolean;
  /** Digits as written, "" for `host:`, null without a colon. */
  port: string | null;
  /** path-abempty, as written. */
  path: string;
  /** Without the "?", null when there is no "?". */
  query: string | null;
}

export type StrictParse = { ok: true; parts: UrlParts } | { ok: false; reason: string };

const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):/;
/** unreserved / reserved / "%": everything RFC 3986 allows to appear in a URI at all. */
const URI_CHAR = /[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=%]/;
const PERCENT = /%(?![0-9A-Fa-f]{2})/;

export function parseUrlStrict(url: string, schemes: readonly string[]): StrictParse {
  const scheme = SCHEME.exec(url)?.[1];
  if (scheme === undefined) return refuse("is not an absolute URL (RFC 3986: it must start with a scheme such as https:)");
  if (!schemes.includes(scheme.toLowerCase())) return refuse(`uses scheme "${scheme.toLowerCase()}"; allowed: ${schemes.join(", ")}`);
  if (url.includes("#")) return refuse("contains a fragment");
  for (const [index, char] of [...url].entries()) {
    if (!URI_CHAR.test(char)) {
      return refuse(`contains a character RFC 3986 does not allow in a URL: ${showChar(char)} at position ${index} (percent-encode it; international host names go in their xn-- form)`);
    }
  }
  if (PERCENT.test(url)) return refuse('contains a percent sign that is not followed by two hex digits');
  const rest = url.slice(scheme.length + 1);
  if (!rest.startsWith("//")) return refuse(`has no host (an ${scheme.toLowerCase()} URL is "${scheme.toLowerCase()}://host/path")`);
  const afterSlashes = rest.slice(2);
  const authorityEnd = afterSlashes.search(/[/?]/);
  const authority = authorityEnd === -1 ? afterSlashes : afterSlashes.slice(0, authorityEnd);
  const tail = authorityEnd === -1 ? "" : afterSlashes.slice(authorityEnd);
  if (authority.includes("@")) return refuse("contains userinfo (credentials are not allowed in URLs)");

  const hostPort = splitHostPort(authority);
  if (!hostPort.ok) return hostPort;
  const { host, ipv6, port } = hostPort;
  if (port !== null && port !== "" && (!/^\d{1,5}$/.test(port) || Number(port) > 65535)) return refuse(`has an invalid port "${port.slice(0, 20)}"`);

  const queryStart = tail.indexOf("?");
  const path = queryStart === -1 ? tail : tail.slice(0, queryStart);
  const query = queryStart === -1 ? null : tail.slice(queryStart + 1);
  // "[" and "]" are gen-delims allowed only around an IPv6 host.
  if (/[[\]]/.test(tail)) return refuse('contains "[" or "]" outside the host: "[" is only allowed around an IPv6 address (percent-encode it elsewhere)');
  return { ok: true, parts: { scheme, host, ipv6, port, path, query } };
}

type HostPort = { ok: true; host: string; ipv6: boolean; port: string | null } | { ok: false; reason: string };

function splitHostPort(authority: string): HostPort {
  if (authority.startsWith("[")) {
    const close = authority.indexOf("]");
    if (close === -1) return refuse("has an unterminated IPv6 address (missing \"]\")");
    const literal = authority.slice(1, close);
    // Only IPv6address: no zone id (%25eth0 would pick an interface), no IPvFuture ("v1.x").
    if (!/^[0-9A-Fa-f:.]+$/.test(literal)) return refuse(`has an invalid IPv6 address in brackets ("${literal.slice(0, 60)}"; zone ids and IPvFuture are not allowed)`);
    const after = authority.slice(close + 1);
    if (after !== "" && !after.startsWith(":")) return refuse("has characters after the IPv6 address that are not a port");
    return { ok: true, host: literal, ipv6: true, port: after === "" ? null : after.slice(1) };
  }
  const colon = authority.indexOf(":");
  const host = colon === -1 ? authority : authority.slice(0, colon);
  const port = colon === -1 ? null : authority.slice(colon + 1);
  if (host === "") return refuse("has no host");
  return { ok: true, host, ipv6: false, port };
}

/** True when every character may appear in a URI reference (RFC 3986) and every "%" starts an escape. */
export function hasOnlyUriCharacters(text: string): boolean {
  return [...text].every((char) => URI_CHAR.test(char)) && !PERCENT.test(text);
}

function showChar(char: string): string {
  const code = char.codePointAt(0)!;
  if (code < 0x21 || code === 0x7f || (code >= 0x80 && code < 0xa0)) return `U+${code.toString(16).toUpperCase().padStart(4, "0")}`;
  return `"${char}"`;
}

function refuse(reason: string): { ok: false; reason: string } {
  return { ok: false, reason };
}
