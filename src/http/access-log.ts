/**
 * The access-log line: one per request, the same fields pino writes for
 * `logger.info({ requestId, method, path, status, ms, code, client }, "request")`.
 *
 * For a logger of the shape `ferry serve` builds (createLogger in server.ts:
 * no mixin, hooks, message prefix, nested key, log formatter or serializers
 * for these fields, time as epoch milliseconds) the line is put together here
 * from pino's own pieces (its level prefix, its bindings, its line ending) and
 * handed to the logger's destination, the lines of one event-loop turn in
 * one write: pino's generic path (rest arguments, message formatting, the
 * per-key loop) and the destination's per-write bookkeeping were ~10% of a
 * cached manifest GET (docs/benchmarks-history.md, round 6). test/http/access-log.test.ts holds the line
 * to pino's own, byte for byte. Any other logger (tests pass their own, a
 * future option) goes through pino as before.
 *
 * The fields are fixed and carry no headers, query or body, so neither path
 * redacts (walking pino's redaction paths cost as much as writing the line).
 */
import pino, { type Logger } from "pino";

export interface AccessFields {
  requestId: string;
  method: string;
  path: string;
  status: number;
  ms: number;
  /** The error code of a failed request; left out of the line when undefined. */
  code: string | undefined;
  client: string;
}

export type AccessLog = (fields: AccessFields) => void;

const FIELDS = ["requestId", "method", "path", "status", "ms", "code", "client"] as const;
const MESSAGE = "request";

export function accessLog(logger: Logger): AccessLog {
  const child = logger.child({}, { redact: [] });
  if (!plainShape(child)) return (fields) => child.info(fields, MESSAGE);
  const s = pino.symbols;
  const internals = child as unknown as Record<symbol, unknown>;
  const levelPrefix = (internals[s.lsCacheSym] as Record<number, string>)[30]!;
  const bindings = internals[s.chindingsSym] as string;
  const end = `,"msg":"${MESSAGE}"${internals[s.endSym] as string}`;
  const stream = internals[s.streamSym] as Destination;
  // The lines of one event-loop turn go to the destination together, at the
  // end of the turn (setImmediate): its asynchronous writer measures and
  // appends every string it is given, which cost as much per line as building it.
  const pending: string[] = [];
  // Each write stays within the destination's largest write (ferry serve: PIPE_BUF, so lines
  // from serving threads sharing a pipe never interleave), counted in UTF-16 units at 3
  // bytes each so no line needs measuring; a single longer line goes alone, as with pino.
  const unitsPerWrite = Math.max(1, Math.floor((stream.maxWrite ?? DEFAULT_MAX_WRITE) / 3));
  const flush = (exiting = false) => {
    unflushed.delete(flush);
    if (pending.length === 0) return;
    let batch = "";
    for (const line of pending) {
      if (batch !== "" && batch.length + line.length > unitsPerWrite) {
        stream.write(batch);
        batch = "";
      }
      batch += line;
    }
    stream.write(batch);
    pending.length = 0;
    // pino's own exit hook may have flushed the destination already: flush what was just added.
    if (exiting) stream.flushSync?.();
  };
  const flushSoon = () => flush();
  return (f) => {
    // The child's level, read per line as pino does (it may be changed at run time).
    if (!child.isLevelEnabled("info")) return;
    const code = f.code === undefined ? "" : `,"code":${quote(f.code)}`;
    if (pending.length === 0) {
      setImmediate(flushSoon);
      watchExit();
      unflushed.add(flush);
    }
    pending.push(
      `${levelPrefix},"time":${Date.now()}${bindings},"requestId":${quote(f.requestId)},"method":${quote(f.method)},"path":${quote(f.path)},"status":${num(f.status)},"ms":${tenths(f.ms)}${code},"client":${quote(f.client)}${end}`,
    );
  };
}

/** sonic-boom's own default largest write (16 KiB). */
const DEFAULT_MAX_WRITE = 16 * 1024;

interface Destination {
  write(text: string): unknown;
  /** sonic-boom: the largest single write(2) it makes from whole writes given to it. */
  maxWrite?: number;
  /** sonic-boom (pino.destination): writes everything buffered before returning. */
  flushSync?(): void;
}

/** Batches waiting for the end of the turn; written synchronously if the process exits first (process.exit). */
const unflushed = new Set<(exiting: boolean) => void>();
let exitWatched = false;

function watchExit(): void {
  if (exitWatched) return;
  exitWatched = true;
  process.once("exit", () => {
    for (const flush of unflushed) {
      try {
        flush(true);
      } catch {
        // Nothing can be reported while exiting; the other batches are still written.
      }
    }
  });
}

/** Characters JSON must escape (request lines and header values hold no others: Node reads them as latin1). */
const NEEDS_ESCAPE = /["\\\u0000-\u001f]/u;

/** A JSON string, as JSON.stringify (and pino) write it; most values need no escaping, and testing for that is half the cost. */
function quote(text: string): string {
  return NEEDS_ESCAPE.test(text) ? JSON.stringify(text) : `"${text}"`;
}

/**
 * The duration as String() writes it, for the one-decimal values the
 * dispatcher passes (0.3, 12, 1234.5) without the shortest-decimal search
 * String() runs on a fraction; anything else goes to String().
 */
function tenths(ms: number): string {
  const t = Math.round(ms * 10);
  if (t / 10 !== ms || t < 0 || t > 1e15) return num(ms);
  const whole = Math.trunc(t / 10);
  const digit = t - whole * 10;
  return digit === 0 ? String(whole) : `${whole}.${digit}`;
}

/** pino writes a number that is not finite as null. */
function num(value: number): string {
  return Number.isFinite(value) ? String(value) : "null";
}

/** Whether pino would write the access fields exactly as accessLog() does (exported for its test). */
export function plainShape(logger: Logger): boolean {
  const s = pino.symbols;
  const internals = logger as unknown as Record<symbol, unknown>;
  const hooks = internals[s.hooksSym] as { logMethod?: unknown; streamWrite?: unknown } | undefined;
  const formatters = internals[s.formattersSym] as { log?: unknown } | undefined;
  const serializers = (internals[s.serializersSym] ?? {}) as Record<string, unknown>;
  const stringifiers = (internals[s.stringifiersSym] ?? {}) as Record<string | symbol, unknown>;
  const stream = internals[s.streamSym] as ({ write?: unknown } & Record<symbol, unknown>) | undefined;
  const lsCache = internals[s.lsCacheSym] as Record<number, unknown> | undefined;
  return (
    logger.levels.values.info === 30 &&
    typeof lsCache?.[30] === "string" &&
    typeof internals[s.chindingsSym] === "string" &&
    typeof internals[s.endSym] === "string" &&
    internals[s.timeSym] === pino.stdTimeFunctions.epochTime &&
    internals[s.messageKeySym] === "msg" &&
    // pino 10 has no type for this symbol; undefined when the logger has no message prefix.
    internals[(s as unknown as Record<string, symbol>).msgPrefixSym ?? Symbol()] === undefined &&
    !internals[s.mixinSym] &&
    !internals[s.nestedKeySym] &&
    hooks?.logMethod === undefined &&
    hooks?.streamWrite === undefined &&
    formatters?.log === undefined &&
    FIELDS.every((key) => serializers[key] === undefined && stringifiers[key] === undefined) &&
    serializers.msg === undefined &&
    stringifiers.msg === undefined &&
    stringifiers[s.wildcardFirstSym] === undefined &&
    typeof stream?.write === "function" &&
    stream[s.needsMetadataGsym] !== true
  );
}
