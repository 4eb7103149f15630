/** The `notifications` config section (docs/notifications.md describes every key). */
import { z } from "zod";
import { duration } from "../config/types.js";

/** Everything an endpoint can subscribe to. */
export const EVENT_ACTIONS = ["push", "pull", "delete", "mount", "gc", "foreign-source-failed", "foreign-source-recovered"] as const;
export type EventAction = (typeof EVENT_ACTIONS)[number];

/**
 * Without `events`, an endpoint gets everything but pulls: a pull event is a
 * durable write per manifest or blob GET, which an operator should choose.
 */
export const DEFAULT_EVENTS: readonly EventAction[] = EVENT_ACTIONS.filter((action) => action !== "pull");

/** Header names the delivery sets itself; configuring them would break the envelope or its signature. */
const RESERVED_HEADERS = new Set(["content-type", "content-length", "host", "transfer-encoding", "connection", "ferry-signature-256"]);

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A value may not carry line breaks (header injection) or other control characters. */
const headerValue = z.string().regex(/^[\t\x20-\x7e\x80-\xff]*$/, "a header value may not contain line breaks or control characters");

export const endpointSchema = z.strictObject({
  /** Identifies the endpoint in status, metrics and logs; its queue is keyed by it, so renaming starts an empty queue. */
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, "letters, digits, '.', '_' and '-', at most 64, starting with a letter or digit"),
  url: z.string().regex(/^https?:\/\/[^\s]+$/, "write an http:// or https:// URL, e.g. https://ci.example.com/hooks/registry"),
  /** Sent with every delivery (e.g. Authorization); a list sends the header once per value, as distribution's config does. */
  headers: z
    .record(z.string(), z.union([headerValue, z.array(headerValue).min(1)]))
    // Checked here rather than as the record's key schema, whose errors do not say what is wrong.
    .superRefine((headers, ctx) => {
      for (const name of Object.keys(headers)) {
        if (!HEADER_NAME.test(name)) ctx.addIssue({ code: "custom", path: [name], message: "is not a header name (letters, digits and -)" });
        else if (RESERVED_HEADERS.has(name.toLowerCase())) ctx.addIssue({ code: "custom", path: [name], message: "is set by Ferry itself and cannot be configured" });
      }
    })
    .default({}),
  events: z.array(z.enum(EVENT_ACTIONS)).min(1, "name at least one event, or leave `events` out for all but pull").optional(),
  /** Longest wait for the connection and the answer's headers. */
  timeout: duration.refine((ms) => ms >= 10 && ms <= 300_000, "must be between 10ms and 5m").default(5_000),
  /** Wait after the first failed attempt; doubles per failure up to maxBackoff. */
  backoff: duration.refine((ms) => ms >= 10, "must be at least 10ms").default(1_000),
  maxBackoff: duration.refine((ms) => ms >= 10, "must be at least 10ms").default(300_000),
  /** Give an event up after this many failed attempts (0: never by count). */
  maxAttempts: z.number().int().min(0).max(1_000_000).default(0),
  /** Give an event up once it is this old (0: never by age). */
  maxAge: duration.default(24 * 3_600_000),
  /** Events of different repositories in flight at once (one repository is always one at a time, in order). */
  concurrency: z.number().int().min(1).max(64).default(4),
  /**
   * Events of one repository sent in one envelope when several are waiting
   * (1: one event per request). A burst of pulls then costs a request per
   * batch instead of per event.
   */
  maxBatch: z.number().int().min(1).max(1000).default(50),
  /** HMAC-SHA256 key: each body is signed in `Ferry-Signature-256: sha256=<hex>`. */
  hmacSecret: z.string().min(16, "an HMAC secret needs at least 16 characters").optional(),
  /** Allow loopback, private and link-local addresses (a receiver inside the network); refused by default, like foreign layer URLs. */
  allowPrivate: z.boolean().default(false),
});

export const notificationsConfigSchema = z
  .strictObject({
    endpoints: z.array(endpointSchema).max(32).default([]),
    /** Events waiting per endpoint; when full, the oldest is dropped (and counted). */
    queueSize: z.number().int().min(1).max(10_000_000).default(10_000),
    /** How often every process looks for work other processes queued (its own is sent at once). */
    pollInterval: duration.refine((ms) => ms >= 10 && ms <= 60_000, "must be between 10ms and 1m").default(500),
  })
  .superRefine((config, ctx) => {
    const seen = new Set<string>();
    config.endpoints.forEach((endpoint, index) => {
      if (seen.has(endpoint.name)) ctx.addIssue({ code: "custom", path: ["endpoints", index, "name"], message: `"${endpoint.name}" names two endpoints; names must be unique` });
      seen.add(endpoint.name);
      if (endpoint.maxBackoff < endpoint.backoff) ctx.addIssue({ code: "custom", path: ["endpoints", index, "maxBackoff"], message: "must not be below backoff" });
    });
  });

export type NotificationsConfig = z.output<typeof notificationsConfigSchema>;
export type EndpointConfig = z.output<typeof endpointSchema>;
