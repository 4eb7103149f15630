/**
 * The hook through which code outside src/tracing reports outgoing requests
 * to tracing, without importing OpenTelemetry: empty unless tracing is
 * enabled, so the cost when off is one property read.
 */

export interface OutgoingSpan {
  /** Headers to send with the request (W3C `traceparent`, `tracestate`). */
  headers: Record<string, string>;
  /** Ends the span: with the response status, or with the error that ended the request. */
  end(status: number | null, error?: unknown): void;
}

export interface TracingHooks {
  /** A client span for one outgoing HTTP request (one per redirect hop), child of the active span. */
  outgoing?: (method: string, url: URL, kind: string) => OutgoingSpan;
}

export const tracingHooks: TracingHooks = {};
