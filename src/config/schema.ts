/**
 * The whole configuration. Every key has a default, so no file is needed;
 * unknown keys are errors (a typo must not be silently ignored).
 */
import { z } from "zod";
import { duration, size } from "./types.js";
import { federationConfigSchema } from "../federation/config.js";
import { authConfigSchema } from "../auth/config.js";
import { notificationsConfigSchema } from "../notifications/config.js";
import { isIpOrCidr } from "../http/client-address.js";
import { tracingConfigSchema } from "../tracing/config.js";
import { auditConfigSchema } from "../audit/config.js";
import { mirrorsConfigSchema, syncConfigSchema } from "../mirrors/config.js";

/**
 * An S3 key goes into the Authorization header, which takes only visible ASCII: a pasted
 * placeholder ("…") or a stray newline would otherwise surface as "Invalid character in
 * header content" from the first request. The message never echoes the value (it is a secret).
 */
const s3Credential = z.string().min(1).regex(/^[\x21-\x7e]+$/, "must be visible ASCII characters only (no spaces, newlines or placeholders like …)");

/**
 * Connection and request limits (docs/security.md "Limits"). Defaults follow nginx and distribution:
 * a client that sends nothing for a minute is dropped, uploads may take as long as they keep moving.
 */
const httpConfigSchema = z.strictObject({
  /** Time to receive a request's headers (slowloris); also bounds a connection that never sends a request. */
  headersTimeout: duration.refine((ms) => ms >= 1, "must be above 0").default(60_000),
  /** A request body that sends no byte for this long while the registry waits for it is cut off (408). */
  requestIdleTimeout: duration.refine((ms) => ms >= 1, "must be above 0").default(60_000),
  /** An idle keep-alive connection is closed after this long. */
  keepAliveTimeout: duration.refine((ms) => ms >= 1, "must be above 0").default(65_000),
  /** Upload requests (POST, PATCH, PUT on uploads) and other requests with a body one client address may have in progress at once; more get 429. */
  maxUploadsPerClient: z.number().int().min(1).max(100_000).default(32),
  /** Size of a request's start line and headers together; more gets 431. */
  maxHeaderBytes: size.refine((n) => n >= 1024 && n <= 1024 * 1024, "must be between 1KiB and 1MiB").default(16 * 1024),
  /** Number of header fields in one request; more gets 431. */
  maxHeaderCount: z.number().int().min(16).max(10_000).default(100),
});

/** An IPv4/IPv6 address or CIDR range, checked here so a typo stops start-up. */
const ipOrCidr = z.string().refine((value) => isIpOrCidr(value), "must be an IP address or a CIDR range, e.g. 10.0.0.0/8 or ::1");

/** HOST:PORT; an empty host (":5000") means every interface, as in Go's and distribution's `addr`. */
const listen = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]*):\d{1,5}$/, "write HOST:PORT, e.g. 127.0.0.1:5000, [::1]:5000, or :5000 for every interface")
  .refine((value) => Number(value.slice(value.lastIndexOf(":") + 1)) <= 65535, "the port must be 0-65535");

export const configSchema = z.strictObject({
  listen: listen.default("127.0.0.1:5000"),
  /** Root of everything Ferry keeps on disk in its embedded mode. */
  data: z.string().min(1).default("./data"),
  /** Processes serving the same data (one per core is sensible). */
  workers: z.number().int().min(1).max(64).default(1),
  /**
   * Threads of one process serving the same listening socket (src/threads/);
   * "auto" is one per core, at most MAX_AUTO_THREADS, and 1 under --workers N.
   * One by default: on 2 cores a second thread bought ~35% more cached GETs
   * per second for ~30-40 MiB more memory (docs/benchmarks-history.md, "Speed round 6"),
   * which a laptop or a small replica should not pay unasked.
   */
  threads: z.union([z.literal("auto"), z.number().int().min(1).max(64)]).default(1),
  log: z
    .strictObject({
      level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
      accessLog: z.boolean().default(true),
    })
    .default({ level: "info", accessLog: true }),
  storage: z
    .strictObject({
      driver: z.enum(["filesystem", "s3"]).default("filesystem"),
      /** Blobs in an S3-compatible bucket (docs/storage.md); required when driver is s3. */
      s3: z
        .strictObject({
          /** Omit for AWS; e.g. http://127.0.0.1:7480 for a local Ceph RGW. */
          endpoint: z.string().regex(/^https?:\/\/[^\s/]+(\/.*)?$/, "write a URL, e.g. http://127.0.0.1:7480").optional(),
          region: z.string().min(1).default("us-east-1"),
          bucket: z.string().min(3),
          /** Key prefix inside the bucket. */
          prefix: z.string().default(""),
          /** Path-style URLs (http://host/bucket/key); defaults to true when an endpoint is set. */
          forcePathStyle: z.boolean().optional(),
          /** Both or neither; without them the AWS credential chain (AWS_* variables, shared files, instance roles). */
          accessKeyId: s3Credential.optional(),
          secretAccessKey: s3Credential.optional(),
          /** Multipart part size for uploads: memory per active push, and the smallest chunk S3 receives. */
          partSize: size.refine((n) => n >= 5 * 1024 * 1024 && n <= 5 * 1024 ** 3, "must be between 5MiB and 5GiB").default(16 * 1024 * 1024),
          /** Answer blob GETs with 307 to a presigned URL of the object (clients must reach the endpoint). */
          redirect: z
            .strictObject({ enabled: z.boolean().default(false), expires: duration.refine((ms) => ms >= 1000 && ms <= 7 * 86_400_000, "must be between 1s and 7d").default(15 * 60_000) })
            .default({ enabled: false, expires: 15 * 60_000 }),
        })
        .optional(),
      filesystem: z
        .strictObject({
          /** Defaults to <data>/blobs. */
          path: z.string().optional(),
          /** fsync blobs before they become visible, so a power cut cannot leave a truncated blob behind a digest. */
          fsync: z.boolean().default(true),
          /** Write uploads with O_DIRECT (bypassing the page cache) where the filesystem allows it. */
          directIo: z.boolean().default(true),
        })
        .default({ fsync: true, directIo: true }),
      /**
       * How large local blobs reach the client: "copy" (a native thread copies through a 64 KiB buffer; fastest
       * on loopback), "sendfile" (sendfile(2), saves CPU on real NICs), "stream" (through Node). The native modes
       * need Linux and the addon in native/sendfile; without it every value streams.
       */
      blobTransfer: z.enum(["copy", "sendfile", "stream"]).default("copy"),
    })
    .default({ driver: "filesystem", filesystem: { fsync: true, directIo: true }, blobTransfer: "copy" }),
  metadata: z
    .strictObject({
      driver: z.enum(["sqlite", "postgres"]).default("sqlite"),
      sqlite: z.strictObject({ path: z.string().optional() }).default({}),
      // docs/metadata.md. The URL may carry a password: messages never echo it.
      postgres: z
        .strictObject({
          url: z
            .string()
            .refine((value) => /^postgres(ql)?:\/\//.test(value), "must be a postgres:// URL (postgres://user@host:5432/database)")
            .optional(),
          poolSize: z.number().int().min(1).max(1000).default(10),
          connectTimeout: duration.refine((ms) => ms >= 1, "must be above 0").default(10_000),
          statementTimeout: duration.refine((ms) => ms >= 1, "must be above 0").default(60_000),
        })
        .default({ poolSize: 10, connectTimeout: 10_000, statementTimeout: 60_000 }),
    })
    .refine((m) => m.driver !== "postgres" || m.postgres.url !== undefined, {
      message: "metadata.driver postgres needs metadata.postgres.url (or FERRY_METADATA__POSTGRES__URL)",
      path: ["postgres", "url"],
    })
    .default({ driver: "sqlite", sqlite: {}, postgres: { poolSize: 10, connectTimeout: 10_000, statementTimeout: 60_000 } }),
  uploads: z
    .strictObject({
      purgeAfter: duration.default(24 * 3_600_000),
      purgeInterval: duration.default(3_600_000),
      /** Upload sessions open at once in the whole registry; a POST beyond it gets 429 until some finish or expire. */
      maxOpenSessions: z.number().int().min(1).default(50_000),
    })
    .default({ purgeAfter: 24 * 3_600_000, purgeInterval: 3_600_000, maxOpenSessions: 50_000 }),
  manifests: z
    .strictObject({
      maxBytes: size.default(4 * 1024 * 1024),
      /** Accept manifests whose blobs or child manifests are not pushed (yet): OCI "sparse" manifests (docs/mirrors.md). */
      sparse: z.boolean().default(false),
    })
    .default({ maxBytes: 4 * 1024 * 1024, sparse: false }),
  gc: z
    .strictObject({
      /** Online garbage collection every `interval`; 0 turns the schedule off (`ferry gc` still works). */
      interval: duration.default(0),
      gracePeriod: duration.default(3_600_000),
      untagged: z.boolean().default(false),
    })
    .default({ interval: 0, gracePeriod: 3_600_000, untagged: false }),
  http: httpConfigSchema.default(httpConfigSchema.parse({})),
  /**
   * Reverse proxies (IPs or CIDRs) whose X-Forwarded-For is believed. Empty: the socket peer is the client.
   * The client address keys login rate limits, the per-client upload cap and the access log.
   */
  trustedProxies: z.array(ipOrCidr).default([]),
  federation: federationConfigSchema.default(federationConfigSchema.parse({})),
  auth: authConfigSchema.optional(),
  /** Webhooks: the distribution notification envelope to configured endpoints (docs/notifications.md). */
  notifications: notificationsConfigSchema.default(notificationsConfigSchema.parse({})),
  /** OpenTelemetry traces (docs/observability.md); off by default. */
  tracing: tracingConfigSchema.default(tracingConfigSchema.parse({})),
  /** The audit log of pushes, deletions, tag moves and logins (docs/observability.md). */
  audit: auditConfigSchema.default(auditConfigSchema.parse({})),
  /** The web UI at /ui/ and its JSON API under /ferry/v1 (docs/ui.md). */
  ui: z.strictObject({ enabled: z.boolean().default(true) }).default({ enabled: true }),
  /** Pull-through mirrors of upstream registries, read-only under their prefix (docs/mirrors.md). */
  mirrors: mirrorsConfigSchema.default([]),
  /** Scheduled copies of tags from mirrored repositories (docs/mirrors.md). */
  sync: z.array(syncConfigSchema).default([]),
}).superRefine((config, ctx) => {
  // A sync copies from a mirror: its repository must be under one of the prefixes.
  config.sync.forEach((sync, index) => {
    if (!config.mirrors.some((m) => sync.from.startsWith(m.prefix) && sync.from.length > m.prefix.length)) {
      ctx.addIssue({ code: "custom", path: ["sync", index, "from"], message: `${sync.from} is under no mirror's prefix (mirrors[].prefix)` });
    }
  });
});

export type Config = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
