/**
 * Which network addresses the registry may fetch foreign layers from
 * (FEDERATION.md §3). A URL host is checked after the WHATWG URL parser has
 * normalised it (so `2130706433`, `0x7f.1`, `0177.0.0.1` and `127.1` all
 * arrive here as 127.0.0.1), and every address DNS returns for a name is
 * checked again before the connection is made to exactly that address.
 */
import ipaddr from "ipaddr.js";

/** Why an address is refused, or null when it is an ordinary public unicast address. */
export function forbiddenAddressReason(address: string): string | null {
  let parsed: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    parsed = ipaddr.parse(stripBrackets(address));
  } catch {
    return "is not an IP address";
  }
  if (parsed.kind() === "ipv6") {
    const v6 = parsed as ipaddr.IPv6;
    // ::ffff:a.b.c.d reaches the IPv4 host a.b.c.d: judge it as that host.
    if (v6.isIPv4MappedAddress()) return forbiddenAddressReason(v6.toIPv4Address().toString());
    const range = v6.range();
    if (range === "unicast") return null;
    return describe(range, "IPv6");
  }
  const range = (parsed as ipaddr.IPv4).range();
  if (range === "unicast") return null;
  return describe(range, "IPv4");
}

const RANGE_NAMES: Record<string, string> = {
  unspecified: "an unspecified address",
  broadcast: "a broadcast address",
  multicast: "a multicast address",
  linkLocal: "a link-local address (this includes cloud metadata services such as 169.254.169.254)",
  loopback: "a loopback address",
  carrierGradeNat: "a carrier-grade NAT address (100.64.0.0/10)",
  private: "a private network address (RFC 1918)",
  uniqueLocal: "a unique-local address (fc00::/7)",
  reserved: "a reserved address",
  // Addresses that embed or tunnel to an IPv4 host we cannot judge safely.
  rfc6145: "an IPv4-translated address",
  rfc6052: "a NAT64 address embedding an IPv4 host",
  "6to4": "a 6to4 tunnel address",
  teredo: "a Teredo tunnel address",
  deprecatedSiteLocal: "a site-local address",
};

function describe(range: string, family: string): string {
  return `is ${RANGE_NAMES[range] ?? `a special-purpose ${family} address (${range})`}`;
}

function stripBrackets(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/** The host of a parsed URL as an IP literal, or null when it is a DNS name. */
export function ipLiteralOf(hostname: string): string | null {
  const host = stripBrackets(hostname);
  return ipaddr.isValid(host) ? host : null;
}
