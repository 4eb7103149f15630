/**
 * Config `tracing`: OpenTelemetry traces over OTLP/HTTP (docs/observability.md).
 * Off by default; off, no OpenTelemetry module is even loaded.
 */
import { z } from "zod";
import { duration } from "../config/types.js";

export const tracingConfigSchema = z.strictObject({
  enabled: z.boolean().default(false),
  /**
   * The collector's OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces. Without it the exporter's own
   * default applies: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT, or http://localhost:4318/v1/traces.
   */
  endpoint: z.string().regex(/^https?:\/\/[^\s/]+(\/\S*)?$/, "write a URL, e.g. http://127.0.0.1:4318/v1/traces").optional(),
  serviceName: z.string().min(1).max(200).default("ferry"),
  /** Share of new traces recorded (0..1); a request that arrives with a sampled `traceparent` is always recorded. */
  sampleRatio: z.number().min(0).max(1).default(1),
  /** Sent with every export (e.g. a collector's API key); never logged. */
  headers: z
    .record(
      z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "is not an HTTP header name"),
      // Checked here because the exporter only fails at the first export, in the log, and sends nothing
      // (a pasted "…" placeholder did exactly that). The message never echoes the value: it is often a key.
      z.string().regex(/^[\t\x20-\x7e]*$/, "must be printable ASCII (no newlines or placeholders like …)"),
    )
    .default({}),
  /** How long one export may take. */
  exportTimeout: duration.refine((ms) => ms >= 100 && ms <= 120_000, "must be between 100ms and 2m").default(10_000),
});

export type TracingConfig = z.output<typeof tracingConfigSchema>;
