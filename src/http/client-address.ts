/**
 * Who the client is. Behind a reverse proxy every connection comes from the
 * proxy, so X-Forwarded-For is believed, but only from configured trusted
 * proxies (config `trustedProxies`): anyone else could write any address into
 * the header and dodge per-client limits. The address is resolved once per
 * request and keys the login rate limit, the upload cap and the access log.
 */
import ipaddr from "ipaddr.js";

type Address = ipaddr.IPv4 | ipaddr.IPv6;
type Range = [Address, number];
type Peer = { address: Address; text: string };

/** Whether `value` is an IP address or a CIDR range (`10.0.0.0/8`, `fd00::/8`, `::1`). */
export function isIpOrCidr(value: string): boolean {
  return parseRange(value) !== null;
}

function parseRange(value: string): Range | null {
  const text = value.trim();
  try {
    if (text.includes("/")) {
      const [address, bits] = ipaddr.parseCIDR(text);
      return [unmap(address), address.kind() === "ipv6" && unmap(address).kind() === "ipv4" ? Math.max(bits - 96, 0) : bits];
    }
    const address = unmap(ipaddr.parse(text));
    return [address, address.kind() === "ipv4" ? 32 : 128];
  } catch {
    return null;
  }
}

/** ::ffff:a.b.c.d is the IPv4 host a.b.c.d (dual-stack sockets report IPv4 peers this way). */
function unmap(address: Address): Address {
  if (address.kind() === "ipv6" && (address as ipaddr.IPv6).isIPv4MappedAddress()) return (address as ipaddr.IPv6).toIPv4Address();
  return address;
}

function parseAddress(value: string): Address | null {
  const text = value.trim().replace(/^\[(.*)\]$/, "$1");
  if (!ipaddr.isValid(text)) return null;
  try {
    return unmap(ipaddr.parse(text));
  } catch {
    return null;
  }
}

/** Distinct peer addresses whose parse is remembered (cleared whole when full: a bound, not an LRU). */
const PEER_CACHE_SIZE = 1024;

export class ClientAddressResolver {
  private readonly ranges: Range[];
  /**
   * Parsed socket peers. Every request resolves its peer, and parsing with
   * ipaddr.js was ~4% of a manifest GET's CPU; the set of peers is small and
   * keep-alive connections repeat the same one.
   */
  private readonly peers = new Map<string, Peer | null>();

  constructor(trustedProxies: readonly string[]) {
    this.ranges = trustedProxies.map((entry) => {
      const range = parseRange(entry);
      if (!range) throw new Error(`trustedProxies: "${entry}" is not an IP address or CIDR range`);
      return range;
    });
  }

  /**
   * The client's address: the socket peer, unless the peer is a trusted proxy;
   * then the rightmost X-Forwarded-For hop that is not itself a trusted proxy
   * (hops to its left were written by the client and prove nothing).
   */
  resolve(socketAddress: string | undefined, forwardedFor: string | string[] | undefined): string {
    const known = this.peer(socketAddress ?? "");
    if (!known) return socketAddress ?? "";
    const peer = known.address;
    if (this.ranges.length === 0 || forwardedFor === undefined || !this.trusted(peer)) return known.text;
    const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(",") : forwardedFor).split(",");
    let client = peer;
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = parseAddress(hops[i]!);
      // A hop that is not an address: the nearest trusted hop is the best we know.
      if (!hop) break;
      client = hop;
      if (!this.trusted(hop)) break;
    }
    return client.toString();
  }

  private peer(socketAddress: string): Peer | null {
    let peer = this.peers.get(socketAddress);
    if (peer === undefined) {
      const address = parseAddress(socketAddress);
      peer = address ? { address, text: address.toString() } : null;
      if (this.peers.size >= PEER_CACHE_SIZE) this.peers.clear();
      this.peers.set(socketAddress, peer);
    }
    return peer;
  }

  private trusted(address: Address): boolean {
    return this.ranges.some(([range, bits]) => range.kind() === address.kind() && address.match(range, bits));
  }
}

/**
 * The key for per-client limits: the address itself for IPv4, its /64 for
 * IPv6 (one host usually holds a whole /64 and could rotate through it).
 */
export function clientKey(address: string): string {
  const parsed = parseAddress(address);
  if (!parsed || parsed.kind() === "ipv4") return address;
  const parts = (parsed as ipaddr.IPv6).parts.slice(0, 4);
  return `${parts.map((part) => part.toString(16)).join(":")}::/64`;
}
