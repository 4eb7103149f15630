/**
 * The whole configuration. Every key has a default, so no file is needed;
 * unknown keys are errors (a typo must not be silently ignored).
 */
import { z } from "zod";
import { duration, size } from "./types.js";
import { federationConfigSchema } from "../federation/config.js";
import { authConfigSchema } from "../auth/config.js";

const listen = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, "write HOST:PORT, e.g. 127.0.0.1:5000 or [::1]:5000");

export const configSchema = z.strictObject({
  listen: listen.default("127.0.0.1:5000"),
  /** Root of everything Ferry keeps on disk in its embedded mode. */
  data: z.string().min(1).default("./data"),
  /** Processes serving the same data (one per core is sensible). */
  workers: z.number().int().min(1).max(64).default(1),
  log: z
    .strictObject({
      level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
      accessLog: z.boolean().default(true),
    })
    .default({ level: "info", accessLog: true }),
  storage: z
    .strictObject({
      driver: z.enum(["filesystem"]).default("filesystem"),
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
      driver: z.enum(["sqlite"]).default("sqlite"),
      sqlite: z.strictObject({ path: z.string().optional() }).default({}),
    })
    .default({ driver: "sqlite", sqlite: {} }),
  uploads: z
    .strictObject({
      purgeAfter: duration.default(24 * 3_600_000),
      purgeInterval: duration.default(3_600_000),
    })
    .default({ purgeAfter: 24 * 3_600_000, purgeInterval: 3_600_000 }),
  manifests: z.strictObject({ maxBytes: size.default(4 * 1024 * 1024) }).default({ maxBytes: 4 * 1024 * 1024 }),
  gc: z
    .strictObject({
      /** Online garbage collection every `interval`; 0 turns the schedule off (`ferry gc` still works). */
      interval: duration.default(0),
      gracePeriod: duration.default(3_600_000),
      untagged: z.boolean().default(false),
    })
    .default({ interval: 0, gracePeriod: 3_600_000, untagged: false }),
  federation: federationConfigSchema.default(federationConfigSchema.parse({})),
  auth: authConfigSchema.optional(),
});

export type Config = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
