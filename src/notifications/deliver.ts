/**
 * One HTTP delivery of an envelope to an endpoint, through federation's
 * SSRF-safe fetcher: the URL and every address its name resolves to pass the
 * same address rules as a foreign layer URL (loopback, private, link-local
 * and metadata addresses refused unless the endpoint sets `allowPrivate`),
 * and the socket connects only to the checked addresses. Redirects are not
 * followed: a webhook that moved is a configuration error to fix, not a
 * reason to POST events somewhere else.
 *
 * Any 2xx answer is success; anything else (status, timeout, refused
 * connection) is a failed attempt with a short reason for the status page.
 */
import { createHmac } from "node:crypto";
import { FetchError, SafeFetcher } from "../federation/fetcher.js";
import type { EndpointConfig } from "./config.js";
import { ENVELOPE_MEDIA_TYPE } from "./events.js";

/** The header that carries the body's HMAC-SHA256 when the endpoint has an `hmacSecret`. */
export const SIGNATURE_HEADER = "Ferry-Signature-256";
/** At most this much of an answer body is read (and thrown away). */
const MAX_ANSWER_BYTES = 64 * 1024;

export type DeliveryOutcome = { ok: true; status: number } | { ok: false; error: string };

/** `sha256=<hex>` of HMAC-SHA256(secret, body): what receivers recompute and compare. */
export function signature(secret: string, body: Buffer): string {
  return `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
}

export class EndpointClient {
  private readonly fetcher: SafeFetcher;

  constructor(
    private readonly endpoint: EndpointConfig,
    /** Tests replace address judgement; production uses the fetcher's defaults. */
    fetcherOptions: Partial<ConstructorParameters<typeof SafeFetcher>[0]> = {},
  ) {
    this.fetcher = new SafeFetcher({
      schemes: ["http", "https"],
      allowPrivateNetworks: endpoint.allowPrivate,
      maxRedirects: 0,
      ...fetcherOptions,
    });
  }

  /** Throws a FetchError now when the URL itself is refused (syntax, or an IP literal the address rules forbid). */
  checkUrl(): void {
    this.fetcher.checkUrl(this.endpoint.url);
  }

  async send(body: Buffer): Promise<DeliveryOutcome> {
    const headers: Record<string, string | string[]> = {
      ...this.endpoint.headers,
      "User-Agent": "ferry-registry (notifications)",
      "Content-Type": ENVELOPE_MEDIA_TYPE,
      Accept: "*/*",
    };
    if (this.endpoint.hmacSecret) headers[SIGNATURE_HEADER] = signature(this.endpoint.hmacSecret, body);
    // `timeout` bounds each silence; this bounds the whole attempt, so a receiver that drips its answer
    // cannot hold a delivery past its claim (another process would then send the events again).
    const deadline = AbortSignal.timeout(2 * this.endpoint.timeout);
    try {
      const response = await this.fetcher.fetch({
        url: this.endpoint.url,
        method: "POST",
        body,
        headers,
        timeoutMs: this.endpoint.timeout,
        maxBytes: MAX_ANSWER_BYTES,
        signal: deadline,
      });
      // Only the status matters; the socket goes back to the pool (or away, when the answer is large).
      response.body.on("error", () => undefined);
      response.body.resume();
      if (response.status >= 200 && response.status < 300) return { ok: true, status: response.status };
      if (response.status >= 300 && response.status < 400) return { ok: false, error: `answered ${response.status} (a redirect; webhooks do not follow redirects)` };
      return { ok: false, error: `answered ${response.status}` };
    } catch (error) {
      if (error instanceof FetchError) {
        if (error.kind === "redirect") return { ok: false, error: "answered with a redirect; webhooks do not follow redirects" };
        return { ok: false, error: error.message };
      }
      return { ok: false, error: (error as Error).message ?? "request failed" };
    }
  }

  close(): void {
    this.fetcher.close();
  }
}
