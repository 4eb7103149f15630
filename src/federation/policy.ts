/**
 * The URL policy (FEDERATION.md §4.4): allowed schemes, then rules in order
 * (first match wins, `match` is a regex over the whole URL), then the
 * default. The rule that matches a URL also says how a blob request for the
 * layer is answered (error, redirect or proxy), whether proxied bytes are
 * cached, and whether redirects are signed.
 */
import type { FederationConfig } from "./config.js";
import { checkUrlSyntax } from "./url-syntax.js";

export type ServeMode = "error" | "redirect" | "proxy";

export interface SignOptions {
  secret: string;
  expires: number;
}

export interface AllowedUrl {
  allowed: true;
  url: string;
  /** "rules[2] (^https://cdn\.example\.com/)" or "default". */
  rule: string;
  serve: ServeMode;
  cache: boolean;
  sign?: SignOptions;
}

export interface RefusedUrl {
  allowed: false;
  url: string;
  rule: string;
  reason: string;
}

export type UrlDecision = AllowedUrl | RefusedUrl;

export type PolicyConfig = Pick<FederationConfig, "schemes" | "rules" | "default">;

export class UrlPolicy {
  constructor(private readonly config: PolicyConfig) {}

  decide(url: string): UrlDecision {
    const problem = checkUrlSyntax(url, this.config.schemes);
    if (problem) return { allowed: false, url, rule: "syntax", reason: problem.reason };
    for (const [index, rule] of this.config.rules.entries()) {
      // A fresh RegExp state each time: a /g or /y flag must not make matching depend on history.
      rule.match.lastIndex = 0;
      if (!rule.match.test(url)) continue;
      const name = `rules[${index}] (${rule.match.source})`;
      if (rule.deny) return { allowed: false, url, rule: name, reason: `is denied by federation rule ${name}` };
      return { allowed: true, url, rule: name, serve: rule.serve, cache: rule.cache, sign: rule.sign };
    }
    const fallback = this.config.default;
    if (fallback.deny) {
      return {
        allowed: false,
        url,
        rule: "default",
        reason: "matches no federation rule, and the default denies such URLs (only URLs a rule allows are accepted)",
      };
    }
    return { allowed: true, url, rule: "default", serve: fallback.serve, cache: fallback.cache, sign: fallback.sign };
  }
}
