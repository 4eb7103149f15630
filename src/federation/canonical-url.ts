/**
 * The canonical form of a foreign-layer URL (docs/federation.md, "Canonical
 * URL form"). Rules are matched against it, the fetcher requests it and
 * redirect mode sends clients to it, so no spelling can make the policy judge
 * one URL while another is contacted:
 *
 * - the URL must first pass the strict RFC 3986 check (rfc3986.ts);
 * - scheme and host lower-case, one trailing dot of the host removed;
 * - percent-encoded unreserved characters decoded everywhere (`%41` → `A`,
 *   `%7E` → `~`), the hex digits of the remaining escapes upper-case;
 * - IPv4 literals in dotted-quad whatever their spelling (`127.1`,
 *   `2130706433`, `0x7f.1`, `0177.0.0.1`); IPv6 literals compressed and
 *   lower-case; IPv4-mapped IPv6 (`[::ffff:127.0.0.1]`) as the IPv4 it is;
 * - `localhost` and `*.localhost` as 127.0.0.1 (RFC 6761 §6.3: they are
 *   loopback names, never delegated, so they are the loopback address);
 * - the default port (80, 443) removed, an empty path made "/", "." and ".."
 *   segments resolved (after decoding, so `%2e%2e` counts), as any HTTP
 *   client would before sending the request.
 */
import ipaddr from "ipaddr.js";
import { parseIpv6 } from "./address.js";
import { parseUrlStrict } from "./rfc3986.js";

export interface CanonicalUrl {
  href: string;
  scheme: string;
  /** Lower-case name, dotted-quad IPv4, or bracketed compressed IPv6. */
  host: string;
  /** True when `host` is an IP literal. */
  ip: boolean;
  /** A non-default port, or null. */
  port: number | null;
}

export type Canonicalized = { ok: true; url: CanonicalUrl } | { ok: false; reason: string };
export type CanonicalHost = { ok: true; host: string; ip: boolean } | { ok: false; reason: string };

const DEFAULT_PORTS: Record<string, number> = { http: 80, https: 443 };
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

export function canonicalizeUrl(url: string, schemes: readonly string[]): Canonicalized {
  const parsed = parseUrlStrict(url, schemes);
  if (!parsed.ok) return parsed;
  const { parts } = parsed;
  const scheme = parts.scheme.toLowerCase();
  const host = parts.ipv6 ? canonicalIpv6(parts.host) : canonicalName(parts.host);
  if (!host.ok) return host;
  const written = parts.port === null || parts.port === "" ? null : Number(parts.port);
  const port = written === null || written === DEFAULT_PORTS[scheme] ? null : written;
  const query = parts.query === null ? "" : `?${normalizePercent(parts.query)}`;
  const assembled = `${scheme}://${host.host}${port === null ? "" : `:${port}`}${normalizePercent(parts.path)}${query}`;
  // The WHATWG parser does the rest (dot segments, "/" for an empty path) exactly as the fetcher's will.
  let href: string;
  try {
    href = new URL(assembled).href;
  } catch {
    return { ok: false, reason: "cannot be parsed as a URL" };
  }
  const again = new URL(href);
  // Defensive: the canonical form must be a fixed point and keep the host we judged.
  if (again.href !== href || again.hostname !== host.host) return { ok: false, reason: "has no stable canonical form" };
  return { ok: true, url: { href, scheme, host: host.host, ip: host.ip, port } };
}

/** The canonical form of a host as written in a URL or a `hosts:` pattern (IPv6 in brackets or bare). */
export function canonicalHost(written: string): CanonicalHost {
  if (written.startsWith("[") && written.endsWith("]")) return canonicalIpv6(written.slice(1, -1));
  if (written.includes(":")) return canonicalIpv6(written);
  return canonicalName(written);
}

function canonicalName(written: string): CanonicalHost {
  let decoded = "";
  for (let i = 0; i < written.length; i++) {
    const char = written[i]!;
    if (char === "%") {
      const escape = written.slice(i, i + 3);
      const byte = String.fromCharCode(parseInt(escape.slice(1), 16));
      if (!/^%[0-9A-Fa-f]{2}$/.test(escape) || !UNRESERVED.test(byte)) {
        return { ok: false, reason: `host contains ${escape.toLowerCase()}, which is not allowed in a host name` };
      }
      decoded += byte;
      i += 2;
    } else {
      decoded += char;
    }
  }
  const bad = /[^A-Za-z0-9._-]/.exec(decoded);
  if (bad) return { ok: false, reason: `host contains ${JSON.stringify(bad[0])}, which is not allowed in a host name (letters, digits, "-", "_" and "." only)` };
  const lower = decoded.toLowerCase();
  const name = lower.endsWith(".") ? lower.slice(0, -1) : lower;
  if (name === "") return { ok: false, reason: "has no host" };
  if (name.split(".").includes("")) return { ok: false, reason: `has an empty label in its host "${name.slice(0, 100)}"` };
  if (name === "localhost" || name.endsWith(".localhost")) return { ok: true, host: "127.0.0.1", ip: true };
  // A name whose last label is a number is an IPv4 address in one of the forms inet_aton accepts;
  // the WHATWG host parser turns them into dotted-quad (and refuses the impossible ones).
  let host: string;
  try {
    host = new URL(`http://${name}/`).hostname;
  } catch {
    return { ok: false, reason: `has an invalid host "${name.slice(0, 100)}" (it ends in a number but is not an IPv4 address)` };
  }
  return { ok: true, host, ip: ipaddr.IPv4.isValidFourPartDecimal(host) };
}

function canonicalIpv6(literal: string): CanonicalHost {
  const parsed = parseIpv6(literal);
  if (parsed === null) return { ok: false, reason: `has an invalid IPv6 address "${literal.slice(0, 60)}"` };
  // ::ffff:a.b.c.d is the IPv4 host a.b.c.d: one destination, one spelling.
  if (parsed.isIPv4MappedAddress()) return { ok: true, host: parsed.toIPv4Address().toString(), ip: true };
  try {
    return { ok: true, host: new URL(`http://[${literal}]/`).hostname, ip: true };
  } catch {
    return { ok: false, reason: `has an invalid IPv6 address "${literal.slice(0, 60)}"` };
  }
}

/** Decodes escapes of unreserved characters and upper-cases the hex of the others (RFC 3986 §6.2.2). */
function normalizePercent(text: string): string {
  return text.replace(/%([0-9A-Fa-f]{2})/g, (_match, hex: string) => {
    const char = String.fromCharCode(parseInt(hex, 16));
    return UNRESERVED.test(char) ? char : `%${hex.toUpperCase()}`;
  });
}
