/**
 * Which network addresses the registry may fetch foreign layers from
 * (docs/federation.md, "Address rules"). A URL host is checked in its
 * canonical form (so `2130706433`, `0x7f.1`, `0177.0.0.1` and `127.1` all
 * arrive here as 127.0.0.1), and every address DNS returns for a name is
 * checked again before the connection is made to exactly that address.
 *
 * IPv6 addresses that carry an IPv4 address are judged by the IPv4 address
 * they lead to: IPv4-mapped, IPv4-translated, NAT64 (well-known and
 * local-use prefixes), 6to4, Teredo (server and client) and ISATAP. The
 * deprecated IPv4-compatible range ::/96 is refused whole: stacks disagree on
 * where it leads.
 */
import ipaddr from "ipaddr.js";

/** Why an address is refused, or null when it is an ordinary public unicast address. */
export function forbiddenAddressReason(address: string): string | null {
  const host = stripBrackets(address);
  if (host.includes(":")) {
    const v6 = parseIpv6(host);
    return v6 === null ? "is not an IP address" : judgeIpv6(v6);
  }
  return ipaddr.IPv4.isValidFourPartDecimal(host) ? judgeIpv4(ipaddr.IPv4.parse(host)) : "is not an IP address";
}

/**
 * Parses an IPv6 address as inet_pton and the WHATWG parser do. ipaddr.js
 * reads "::a.b.c.d" as the IPv4-mapped ::ffff:a.b.c.d, not as the
 * IPv4-compatible ::a.b.c.d it is, so the dotted tail is turned into two hex
 * groups first.
 */
export function parseIpv6(literal: string): ipaddr.IPv6 | null {
  const dotted = /^(.*:)(\d{1,3}(?:\.\d{1,3}){3})$/.exec(literal);
  let text = literal;
  if (dotted) {
    if (!ipaddr.IPv4.isValidFourPartDecimal(dotted[2]!)) return null;
    const [a, b, c, d] = ipaddr.IPv4.parse(dotted[2]!).octets as [number, number, number, number];
    text = `${dotted[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  return ipaddr.IPv6.isValid(text) ? ipaddr.IPv6.parse(text) : null;
}

function judgeIpv4(v4: ipaddr.IPv4): string | null {
  const range = v4.range();
  return range === "unicast" ? null : describe(range, "IPv4");
}

function judgeIpv6(v6: ipaddr.IPv6): string | null {
  const range = v6.range();
  if (range === "unspecified" || range === "loopback") return describe(range, "IPv6");
  const bytes = v6.toByteArray();
  if (bytes.slice(0, 12).every((b) => b === 0)) {
    return `is an IPv4-compatible IPv6 address (::/96, deprecated by RFC 4291; some systems send it to the IPv4 host ${ipv4At(bytes, 12)})`;
  }
  switch (range) {
    case "ipv4Mapped":
      return embedded("an IPv4-mapped address", ipv4At(bytes, 12));
    case "rfc6145":
      return embedded("an IPv4-translated address (::ffff:0:0:0/96)", ipv4At(bytes, 12));
    case "rfc6052":
      return nat64(bytes);
    case "6to4":
      return embedded("a 6to4 tunnel address", ipv4At(bytes, 2));
    case "teredo": {
      // 2001:0:SSSS:SSSS:flags:port:CCCC:CCCC, the client address inverted bit by bit.
      const server = ipv4At(bytes, 4);
      const client = ipaddr.fromByteArray(bytes.slice(12, 16).map((b) => b ^ 0xff)) as ipaddr.IPv4;
      for (const [role, host] of [["server", server], ["client", client]] as const) {
        const reason = judgeIpv4(host);
        if (reason !== null) return `is a Teredo tunnel address whose ${role} ${host.toString()} ${reason}`;
      }
      return null;
    }
    case "unicast": {
      // ISATAP interface identifier: [0|2]00:5efe:a.b.c.d, the IPv4 address of the tunnel end point.
      const isatap = (bytes[8] === 0 || bytes[8] === 2) && bytes[9] === 0 && bytes[10] === 0x5e && bytes[11] === 0xfe;
      return isatap ? embedded("an ISATAP address", ipv4At(bytes, 12)) : null;
    }
    default:
      return describe(range, "IPv6");
  }
}

/**
 * 64:ff9b::/96 carries the IPv4 address in its last 32 bits. The local-use
 * 64:ff9b:1::/48 (RFC 8215) may use any RFC 6052 prefix length of /48 or
 * more, which places the IPv4 address differently: every layout the address
 * is valid for (the "u" octet and the suffix zero) is judged, and one
 * forbidden reading refuses it.
 */
function nat64(bytes: number[]): string | null {
  const wellKnown = bytes.slice(4, 12).every((b) => b === 0);
  const layouts: Array<{ v4: number[]; zero: number[] }> = wellKnown
    ? [{ v4: [12, 13, 14, 15], zero: [] }]
    : [
        { v4: [6, 7, 9, 10], zero: [8, 11, 12, 13, 14, 15] }, // /48
        { v4: [7, 9, 10, 11], zero: [8, 12, 13, 14, 15] }, // /56
        { v4: [9, 10, 11, 12], zero: [8, 13, 14, 15] }, // /64
        { v4: [12, 13, 14, 15], zero: [] }, // /96
      ];
  const kind = wellKnown ? "a NAT64 address (64:ff9b::/96)" : "a local-use NAT64 address (64:ff9b:1::/48)";
  for (const layout of layouts) {
    if (layout.zero.some((i) => bytes[i] !== 0)) continue;
    const reason = embedded(kind, ipaddr.fromByteArray(layout.v4.map((i) => bytes[i]!)) as ipaddr.IPv4);
    if (reason !== null) return reason;
  }
  return null;
}

/**
 * Every IPv4 address an IPv6 address carries (compatible ::/96, mapped,
 * translated, NAT64 in each layout, 6to4, both Teredo ends, ISATAP), so that
 * a deny rule written for an IPv4 host also refuses its IPv6 spellings.
 */
export function embeddedIpv4s(v6: ipaddr.IPv6): string[] {
  const bytes = v6.toByteArray();
  const out: ipaddr.IPv4[] = [];
  const range = v6.range();
  if (bytes.slice(0, 12).every((b) => b === 0) || range === "ipv4Mapped" || range === "rfc6145") out.push(ipv4At(bytes, 12));
  if (range === "rfc6052") {
    const wellKnown = bytes.slice(4, 12).every((b) => b === 0);
    const layouts = wellKnown ? [[12, 13, 14, 15]] : [[6, 7, 9, 10], [7, 9, 10, 11], [9, 10, 11, 12], [12, 13, 14, 15]];
    for (const layout of layouts) out.push(ipaddr.fromByteArray(layout.map((i) => bytes[i]!)) as ipaddr.IPv4);
  }
  if (range === "6to4") out.push(ipv4At(bytes, 2));
  if (range === "teredo") {
    out.push(ipv4At(bytes, 4));
    out.push(ipaddr.fromByteArray(bytes.slice(12, 16).map((b) => b ^ 0xff)) as ipaddr.IPv4);
  }
  if ((bytes[8] === 0 || bytes[8] === 2) && bytes[9] === 0 && bytes[10] === 0x5e && bytes[11] === 0xfe) out.push(ipv4At(bytes, 12));
  return [...new Set(out.map((v4) => v4.toString()))];
}

function embedded(kind: string, v4: ipaddr.IPv4): string | null {
  const reason = judgeIpv4(v4);
  return reason === null ? null : `is ${kind} embedding ${v4.toString()}, which ${reason}`;
}

function ipv4At(bytes: number[], offset: number): ipaddr.IPv4 {
  return ipaddr.fromByteArray(bytes.slice(offset, offset + 4)) as ipaddr.IPv4;
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
