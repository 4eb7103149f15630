/**
 * The URL policy (docs/federation.md, "URL policy and SSRF"): syntax and
 * allowed schemes, then rules in order (first match wins), then the default.
 * Every check runs on the canonical form of the URL (canonical-url.ts), so a
 * rule sees one spelling per destination. A rule matches when its `match`
 * regex matches the canonical URL and its `hosts` patterns match the
 * canonical host (whichever of the two it has; both when it has both). The
 * rule that matches also says how a blob request for the layer is answered
 * (error, redirect or proxy), whether proxied bytes are cached, and whether
 * redirects are signed.
 */
import type { FederationConfig, FederationRule } from "./config.js";
import { canonicalHost, canonicalizeUrl, type CanonicalUrl } from "./canonical-url.js";
import { embeddedIpv4s, parseIpv6 } from "./address.js";

export type ServeMode = "error" | "redirect" | "proxy";

export interface SignOptions {
  secret: string;
  expires: number;
}

export interface AllowedUrl {
  allowed: true;
  /** The URL as written in the manifest (marks, health and proofs are keyed by it). */
  url: string;
  /** Its canonical form: what the rules judged, what the fetcher requests, where redirect mode sends clients. */
  canonical: string;
  /** "rules[2] (^https://cdn\.example\.com/)", "rules[0] (hosts: *.cdn.example.com)" or "default". */
  rule: string;
  serve: ServeMode;
  cache: boolean;
  sign?: SignOptions;
}

export interface RefusedUrl {
  allowed: false;
  /** The URL as written. */
  url: string;
  rule: string;
  reason: string;
}

export type UrlDecision = AllowedUrl | RefusedUrl;

export type PolicyConfig = Pick<FederationConfig, "schemes" | "rules" | "default">;

/** A `hosts:` entry: one host, or every name below a suffix (`*.cdn.example.com`). */
type HostPattern = { exact: string } | { suffix: string };

interface CompiledRule {
  name: string;
  rule: FederationRule;
  hosts: HostPattern[] | null;
}

export class UrlPolicy {
  private readonly rules: CompiledRule[];

  constructor(private readonly config: PolicyConfig) {
    this.rules = config.rules.map(compileRule);
  }

  decide(url: string): UrlDecision {
    const canonical = canonicalizeUrl(url, this.config.schemes);
    if (!canonical.ok) return { allowed: false, url, rule: "syntax", reason: canonical.reason };
    const note = canonical.url.href === url ? "" : ` (canonical form ${canonical.url.href})`;
    const embedded = this.refusalForEmbeddedIpv4(url, canonical.url);
    if (embedded) return embedded;
    const matched = this.firstMatch(canonical.url);
    if (matched) {
      const { name, rule } = matched;
      if (rule.deny) return { allowed: false, url, rule: name, reason: `is denied by federation rule ${name}${note}` };
      return { allowed: true, url, canonical: canonical.url.href, rule: name, serve: rule.serve, cache: rule.cache, sign: rule.sign };
    }
    const fallback = this.config.default;
    if (fallback.deny) {
      return {
        allowed: false,
        url,
        rule: "default",
        reason: `matches no federation rule${note}, and the default denies such URLs (only URLs a rule allows are accepted)`,
      };
    }
    return { allowed: true, url, canonical: canonical.url.href, rule: "default", serve: fallback.serve, cache: fallback.cache, sign: fallback.sign };
  }

  /**
   * A name is not an address: a deny rule written for 127.0.0.1 cannot see
   * that `intranet.example` resolves there. The fetcher asks this for every
   * address DNS gives it: when the first rule matching the URL with that
   * address as host is a deny rule, the name is refused too.
   */
  refusalForAddress(url: string, address: string): RefusedUrl | null {
    const canonical = canonicalizeUrl(url, this.config.schemes);
    if (!canonical.ok || canonical.url.ip) return null;
    const withAddress = new URL(canonical.url.href);
    withAddress.hostname = address.includes(":") ? `[${address}]` : address;
    const resolved = canonicalizeUrl(withAddress.href, this.config.schemes);
    if (!resolved.ok) return null;
    const matched = this.firstMatch(resolved.url);
    if (!matched?.rule.deny) return null;
    return { allowed: false, url, rule: matched.name, reason: `resolves to ${address}, and ${resolved.url.href} is denied by federation rule ${matched.name}` };
  }

  /**
   * `[::127.0.0.3]`, `[64:ff9b::7f00:3]` or `[2002:7f00:3::]` reach (or, on
   * a network that translates, may reach) 127.0.0.3: a deny rule for the
   * IPv4 host refuses each IPv6 spelling that carries it.
   */
  private refusalForEmbeddedIpv4(url: string, canonical: CanonicalUrl): RefusedUrl | null {
    if (!canonical.ip || !canonical.host.startsWith("[")) return null;
    const v6 = parseIpv6(canonical.host.slice(1, -1));
    if (!v6) return null;
    for (const v4 of embeddedIpv4s(v6)) {
      const withV4 = new URL(canonical.href);
      withV4.hostname = v4;
      const resolved = canonicalizeUrl(withV4.href, this.config.schemes);
      if (!resolved.ok) continue;
      const matched = this.firstMatch(resolved.url);
      if (matched?.rule.deny) {
        return { allowed: false, url, rule: matched.name, reason: `carries the IPv4 address ${v4}, and ${resolved.url.href} is denied by federation rule ${matched.name}` };
      }
    }
    return null;
  }

  private firstMatch(url: CanonicalUrl): CompiledRule | undefined {
    return this.rules.find(({ rule, hosts }) => {
      if (hosts && !hosts.some((pattern) => hostMatches(pattern, url))) return false;
      if (!rule.match) return true;
      // A fresh RegExp state each time: a /g or /y flag must not make matching depend on history.
      rule.match.lastIndex = 0;
      return rule.match.test(url.href);
    });
  }
}

function hostMatches(pattern: HostPattern, url: CanonicalUrl): boolean {
  if ("exact" in pattern) return url.host === pattern.exact;
  return !url.ip && url.host.endsWith(`.${pattern.suffix}`);
}

function compileRule(rule: FederationRule, index: number): CompiledRule {
  const where = `federation.rules[${index}]`;
  if (!rule.match && !rule.hosts) {
    throw new Error(`${where} needs \`match\` or \`hosts\` (a regular expression over the URL, or host names): a rule with neither would match every URL, which is what \`default\` is for`);
  }
  const hosts = rule.hosts?.map((written) => compileHostPattern(written, where)) ?? null;
  const label = [rule.match?.source, hosts && `hosts: ${hosts.map(showPattern).join(", ")}`].filter(Boolean).join(" ");
  return { name: `rules[${index}] (${label})`, rule, hosts };
}

function compileHostPattern(written: string, where: string): HostPattern {
  const wildcard = written.startsWith("*.");
  const host = canonicalHost(wildcard ? written.slice(2) : written);
  if (!host.ok) throw new Error(`${where}.hosts: ${JSON.stringify(written)} ${host.reason.replace(/^host /, "")}`);
  if (!wildcard) return { exact: host.host };
  // *.localhost is 127.0.0.1 like every other localhost name; a wildcard below an IP address means nothing.
  if (host.host === "127.0.0.1" && /^localhost\.?$/i.test(written.slice(2))) return { exact: host.host };
  if (host.ip) throw new Error(`${where}.hosts: ${JSON.stringify(written)}: "*." must be followed by a host name, not an IP address`);
  return { suffix: host.host };
}

function showPattern(pattern: HostPattern): string {
  return "exact" in pattern ? pattern.exact : `*.${pattern.suffix}`;
}
