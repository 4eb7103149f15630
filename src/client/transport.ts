/**
 * HTTP to one registry: scheme choice, authentication challenges, retries,
 * redirects. Auth follows the Docker token spec: a request goes out with the
 * best credentials known for its scope; a 401 names the scheme (`Basic` or
 * `Bearer realm,service,scope`), a token is fetched from the realm (with Basic
 * credentials when we have them) and cached per scope set until it expires.
 *
 * Credentials only ever go to the registry host and its token realm: redirects
 * are followed by hand and the Authorization header is dropped as soon as the
 * origin changes (a containerd CVE leaked credentials exactly there).
 */
import type { Readable } from "node:stream";
import { ClientError, SourceError, isTransient, isTransientStatus, type RemoteErrorEntry, type RequestInfo } from "./errors.js";
import { AgentPool, bodyUsed, discard, readAll, type HttpSender, type TlsSettings } from "./http.js";
import type { Credentials } from "./credentials.js";

export type Body = Buffer | Readable | null;

export interface TransportOptions {
  /** host[:port] */
  registry: string;
  /** Force plain HTTP. Loopback hosts use HTTP anyway (see docs/client.md). */
  insecure?: boolean;
  credentials?: Credentials;
  /** Attempts for a replayable request (default 4). */
  attempts?: number;
  /** First backoff delay in ms (default 250, doubled each retry). */
  backoffMs?: number;
  /** Connections to use (default: one keep-alive pool shared by every Transport with the same TLS settings). */
  pool?: HttpSender;
  userAgent?: string;
  /**
   * TLS settings. Giving any (even `rejectUnauthorized: false`) means HTTPS is
   * wanted, so loopback hosts then use HTTPS too.
   */
  tls?: TlsSettings;
  /** Called once per distinct `Warning: 299` text the registry sends (distribution-spec 1.1 "Warnings"). */
  onWarning?: (text: string) => void;
}

export interface SendOptions {
  method: "GET" | "HEAD" | "PUT" | "POST" | "PATCH" | "DELETE";
  /** A path on the registry (`/v2/...`) or an absolute URL (upload Locations). */
  path: string;
  headers?: Record<string, string>;
  body?: Body;
  /** Token scopes this request needs, e.g. `repository:a/b:pull,push`. */
  scopes?: string[];
  /** Follow 3xx (GET/HEAD only). */
  followRedirects?: boolean;
  /** The caller handles failures itself (an upload chunk resumes from the registry's offset instead). */
  noRetry?: boolean;
}

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable;
  url: URL;
  /** The scopes the request asked for (for error messages). */
  scopes?: string[];
  /** A 401/403 to a request that carried a Bearer token obtained for these scopes: the refusal is about the scope itself. */
  tokenScopes?: string[];
}

interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

/** A token answer is a few KiB of JSON; a realm sending more is not answering (and must not fill memory). */
const TOKEN_MAX_BYTES = 1024 * 1024;

const sharedPool = new AgentPool({ maxSockets: 16 });
/** Pools with custom TLS settings, so closeConnections reaches them too. */
const tlsPools: AgentPool[] = [];

/** Closes the registry connections so a CLI process can exit at once. */
export async function closeConnections(): Promise<void> {
  sharedPool.destroy();
  for (const pool of tlsPools) pool.destroy();
}

/** Texts of `Warning: 299 - "text"` headers (several may share one header line, comma-separated). */
export function parseWarnings(value: string | string[] | undefined): string[] {
  const out: string[] = [];
  for (const line of Array.isArray(value) ? value : value ? [value] : []) {
    const re = /(\d{3})\s+\S+\s+"((?:[^"\\]|\\.)*)"/g;
    for (let m = re.exec(line); m; m = re.exec(line)) if (m[1] === "299") out.push(m[2]!.replace(/\\(.)/g, "$1"));
  }
  return out;
}

export function isLoopbackHost(registry: string): boolean {
  const host = registry.startsWith("[") ? registry.slice(1, registry.indexOf("]")) : registry.split(":")[0]!;
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export function header(headers: Response["headers"], name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

/** Parses `Bearer realm="...",service="...",scope="..."` (RFC 7235 auth-params). */
export function parseChallenge(value: string): Challenge {
  const space = value.indexOf(" ");
  const scheme = (space < 0 ? value : value.slice(0, space)).toLowerCase();
  const params: Record<string, string> = {};
  const re = /([a-zA-Z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  const rest = space < 0 ? "" : value.slice(space + 1);
  for (let m = re.exec(rest); m; m = re.exec(rest)) params[m[1]!.toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : m[3]!;
  return { scheme, params };
}

export class Transport {
  readonly registry: string;
  readonly baseUrl: string;
  private credentials?: Credentials;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly pool: HttpSender;
  private readonly userAgent: string;
  private challenge?: Challenge;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly onWarning?: (text: string) => void;
  private readonly warned = new Set<string>();

  constructor(options: TransportOptions) {
    this.registry = options.registry;
    const plain = options.insecure || (isLoopbackHost(options.registry) && !options.tls);
    this.baseUrl = `${plain ? "http" : "https"}://${options.registry}`;
    this.credentials = options.credentials;
    this.attempts = options.attempts ?? 4;
    this.backoffMs = options.backoffMs ?? 250;
    if (options.pool) this.pool = options.pool;
    else if (options.tls) {
      const pool = new AgentPool({ maxSockets: 16, tls: options.tls });
      tlsPools.push(pool);
      this.pool = pool;
    } else this.pool = sharedPool;
    this.userAgent = options.userAgent ?? "ferry-client/0.1";
    this.onWarning = options.onWarning;
  }

  /** Who a request goes out as, for error messages. */
  private requestInfo(method: string, url: URL | string, token = false, scopes?: string[]): RequestInfo {
    return {
      registry: this.registry,
      method,
      url: String(url),
      ...(this.credentials ? { user: this.credentials.username } : {}),
      ...(token ? { token } : {}),
      ...(scopes ? { scopes } : {}),
    };
  }

  setCredentials(credentials: Credentials | undefined): void {
    this.credentials = credentials;
    this.tokens.clear();
  }

  /**
   * Sends a request, authenticating on demand and retrying transient failures
   * when the body can be sent again (a Buffer or nothing).
   */
  async send(options: SendOptions): Promise<Response> {
    const replayable = options.body === null || options.body === undefined || Buffer.isBuffer(options.body);
    const attempts = replayable && !options.noRetry ? this.attempts : 1;
    for (let attempt = 1; ; attempt++) {
      try {
        const response = await this.sendAuthenticated(options);
        if (options.scopes) response.scopes = options.scopes;
        if (isTransientStatus(response.status) && attempt < attempts) {
          const retryAfter = Number(header(response.headers, "retry-after"));
          await discard(response.body);
          await sleep(Number.isFinite(retryAfter) && retryAfter > 0 ? Math.min(retryAfter * 1000, 10_000) : this.delay(attempt));
          continue;
        }
        return response;
      } catch (error) {
        if (attempt >= attempts || !isTransient(error)) throw error;
        await sleep(this.delay(attempt));
      }
    }
  }

  private delay(attempt: number): number {
    return this.backoffMs * 2 ** (attempt - 1) * (0.75 + Math.random() * 0.5);
  }

  private async sendAuthenticated(options: SendOptions): Promise<Response> {
    const scopes = options.scopes ?? [];
    let authorization = await this.authorization(scopes, false);
    let response = await this.sendFollowing(options, authorization);
    if (response.status !== 401) return response;
    const www = header(response.headers, "www-authenticate");
    if (!www) return response;
    const challenge = parseChallenge(www);
    const known = this.challenge;
    this.challenge = challenge;
    const extraScope = challenge.params.scope;
    const wanted = extraScope && !scopes.includes(extraScope) ? [...scopes, ...extraScope.split(" ")] : scopes;
    const next = await this.authorization(wanted, true);
    // Nothing new to offer: the credentials (or their absence) were already refused.
    if (next === undefined || (next === authorization && known?.scheme === challenge.scheme)) {
      if (next !== undefined) markTokenRefusal(response, next, wanted);
      return response;
    }
    await discard(response.body);
    if (options.body && !Buffer.isBuffer(options.body)) {
      throw new ClientError(`${options.method} ${this.baseUrl}: authentication was required after the upload started`, { status: 401 });
    }
    authorization = next;
    response = await this.sendFollowing(options, authorization);
    markTokenRefusal(response, authorization, wanted);
    return response;
  }

  /** The Authorization header value for these scopes, or undefined for anonymous. */
  private async authorization(scopes: string[], fresh: boolean): Promise<string | undefined> {
    const challenge = this.challenge;
    if (!challenge) return undefined;
    if (challenge.scheme === "basic") {
      return this.credentials ? basic(this.credentials) : undefined;
    }
    if (challenge.scheme !== "bearer") return undefined;
    const key = [...scopes].sort().join(" ");
    const cached = this.tokens.get(key);
    if (!fresh && cached && cached.expiresAt > Date.now()) return `Bearer ${cached.token}`;
    const token = await this.fetchToken(challenge, scopes);
    this.tokens.set(key, token);
    return `Bearer ${token.token}`;
  }

  private async fetchToken(challenge: Challenge, scopes: string[]): Promise<CachedToken> {
    const realm = challenge.params.realm;
    if (!realm) throw new ClientError(`${this.registry} asked for a Bearer token but named no realm`, { request: this.requestInfo("GET", this.baseUrl, true) });
    const url = new URL(realm);
    if (challenge.params.service) url.searchParams.set("service", challenge.params.service);
    for (const scope of scopes) url.searchParams.append("scope", scope);
    const headers: Record<string, string> = { "user-agent": this.userAgent };
    if (this.credentials) headers.authorization = basic(this.credentials);
    const started = Date.now();
    let response;
    try {
      response = await this.pool.send({ method: "GET", url, headers, idleTimeoutMs: 60_000, maxBodyBytes: TOKEN_MAX_BYTES });
    } catch (error) {
      throw new ClientError(`token request to ${url.origin}${url.pathname}: ${(error as Error).message}`, {
        transient: isTransient(error),
        cause: error,
        request: this.requestInfo("GET", url, true),
      });
    }
    const text = (await readAll(response.body)).toString("utf8");
    if (response.status !== 200) {
      throw new ClientError(`token request to ${url.origin}${url.pathname} failed: HTTP ${response.status} ${errorSummary(text)}`, {
        status: response.status,
        errors: remoteErrors(text),
        request: this.requestInfo("GET", url, true),
      });
    }
    let body: { token?: string; access_token?: string; expires_in?: number };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw new ClientError(`token response from ${url.origin} is not JSON`, { request: this.requestInfo("GET", url, true) });
    }
    const token = body.token ?? body.access_token;
    if (!token) throw new ClientError(`token response from ${url.origin} carries no token`);
    // Token spec: expires_in defaults to 60 s; renew a little early.
    const lifetime = (body.expires_in && body.expires_in > 0 ? body.expires_in : 60) * 1000;
    return { token, expiresAt: started + lifetime - Math.min(10_000, lifetime / 4) };
  }

  private async sendFollowing(options: SendOptions, authorization: string | undefined): Promise<Response> {
    let url = new URL(options.path, this.baseUrl);
    const origin = url.origin;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { "user-agent": this.userAgent, ...options.headers };
      if (authorization && url.origin === origin) headers.authorization = authorization;
      let response;
      try {
        response = await this.pool.send({ method: options.method, url, headers, body: options.body ?? null, idleTimeoutMs: 120_000 });
      } catch (error) {
        // A streamed body that failed its own checks: the caller needs that error, not a network one.
        if (error instanceof SourceError) throw error;
        throw new ClientError(`${options.method} ${url.href}: ${(error as Error).message}`, {
          transient: isTransient(error),
          cause: error,
          request: this.requestInfo(options.method, url),
        });
      }
      const status = response.status;
      if (this.onWarning && response.headers.warning) this.warn(response.headers.warning);
      const location = header(response.headers, "location");
      const redirect = (status === 301 || status === 302 || status === 303 || status === 307 || status === 308) && location;
      if (!redirect || !options.followRedirects || hop >= 5) return { status, headers: response.headers, body: response.body, url };
      await discard(response.body);
      url = new URL(location, url);
    }
  }

  private warn(value: string | string[]): void {
    for (const text of parseWarnings(value)) {
      if (this.warned.has(text)) continue;
      this.warned.add(text);
      this.onWarning!(text);
    }
  }

  /** Reads an error answer into a ClientError naming the request. */
  async fail(response: Response, what: string): Promise<never> {
    // A body already read or discarded cannot be read again.
    const text = bodyUsed(response.body) ? "" : await readAll(response.body).then((b) => b.toString("utf8"), () => "");
    const errors = remoteErrors(text);
    const summary = errors.length > 0 ? errors.map((e) => `${e.code}: ${e.message ?? ""}`.trim()).join("; ") : errorSummary(text);
    throw new ClientError(`${what}: HTTP ${response.status}${summary ? ` ${summary}` : ""}`, {
      status: response.status,
      errors,
      transient: isTransientStatus(response.status),
      request: {
        ...this.requestInfo(what.split(" ")[0] ?? "", response.url, false, response.scopes),
        ...(response.tokenScopes ? { tokenScopes: response.tokenScopes } : {}),
      },
    });
  }
}

/**
 * Notes on a 401/403 that the request carried a Bearer token fetched for
 * `scopes`, when the answer's own challenge asks for nothing beyond them
 * (Docker Hub answers so for a repository that does not exist).
 */
function markTokenRefusal(response: Response, authorization: string, scopes: string[]): void {
  if ((response.status !== 401 && response.status !== 403) || !authorization.startsWith("Bearer ")) return;
  const www = header(response.headers, "www-authenticate");
  const asked = www ? (parseChallenge(www).params.scope ?? "").split(" ").filter((scope) => scope !== "") : [];
  if (asked.every((scope) => scopes.includes(scope))) response.tokenScopes = scopes;
}

function basic(credentials: Credentials): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`, "utf8").toString("base64")}`;
}

function remoteErrors(text: string): RemoteErrorEntry[] {
  try {
    const body = JSON.parse(text) as { errors?: unknown };
    if (Array.isArray(body.errors)) {
      return body.errors.filter((e): e is RemoteErrorEntry => typeof e === "object" && e !== null && typeof (e as RemoteErrorEntry).code === "string");
    }
  } catch {
    // not JSON
  }
  return [];
}

function errorSummary(text: string): string {
  return text.trim().slice(0, 200);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
