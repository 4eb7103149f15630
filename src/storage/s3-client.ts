/**
 * The S3 client as the S3 driver uses it, and what its failures mean.
 *
 * The client is built for S3-compatible servers as well as AWS: no default
 * CRC32 checksums (Ceph RGW 16 refuses the aws-chunked uploads they imply,
 * and digests are verified by the registry anyway), path-style addressing
 * when an endpoint is given, keep-alive connections, and timeouts short
 * enough that a dead object store turns into a 503 rather than a hung push.
 */
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { S3Client } from "@aws-sdk/client-s3";
import { RegistryError } from "../oci/errors.js";

export interface S3ConnectionOptions {
  /** Omit for AWS. */
  endpoint?: string;
  region: string;
  bucket: string;
  forcePathStyle?: boolean;
  accessKeyId?: string;
  secretAccessKey?: string;
  /** A request whose connection carries no byte for this long fails (tests shorten it). */
  idleTimeoutMs?: number;
}

/** See S3ConnectionOptions.idleTimeoutMs. */
export const S3_IDLE_TIMEOUT_MS = 60_000;

export function createS3Client(options: S3ConnectionOptions): S3Client {
  // The SDK warns on every start under Node 20 that its releases after January 2027 need
  // Node 22; the version is pinned in package.json (docs/storage.md), so the warning only
  // alarms operators. An explicit setting of the variable is left alone.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
  // Connections to a loopback store are not kept alive: Ceph RGW sends a small body ~40 ms
  // after its headers (Nagle against the client's delayed ACK), which a fresh connection
  // (still in TCP quick-ACK mode) does not suffer; on loopback a connection costs ~0.1 ms
  // and Linux reuses TIME_WAIT ports there (tcp_tw_reuse=2). A 1 KiB GetObject took 45 ms
  // kept alive and 3 ms fresh; elsewhere handshakes (TLS) cost more, so keep-alive stays.
  const agentOptions = { keepAlive: !isLoopbackEndpoint(options.endpoint), maxSockets: 128 };
  const client = new S3Client({
    region: options.region,
    endpoint: options.endpoint,
    forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    credentials:
      options.accessKeyId && options.secretAccessKey
        ? { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey }
        : undefined,
    maxAttempts: 3,
    requestHandler: {
      httpAgent: new HttpAgent(agentOptions),
      httpsAgent: new HttpsAgent(agentOptions),
      // A store that accepts no connection, or stops answering mid-request, fails the request
      // (and the client gets 503) instead of holding its push open. An idle timeout, not
      // `requestTimeout`: in this SDK version that one only logs a warning unless
      // `throwOnRequestTimeout` is set, and it would bound a whole (5 GiB) part upload.
      // Seen: an RGW whose OSD was full held an UploadPart open with no answer; the push
      // hung for good, logging "[WARN] a request has exceeded the configured 60000 ms".
      connectionTimeout: 5_000,
      socketTimeout: options.idleTimeoutMs ?? S3_IDLE_TIMEOUT_MS,
    },
  });
  if (payloadProtectedInTransit(options.endpoint)) {
    // SigV4 otherwise hashes every uploaded byte on the event loop (~120 ms of CPU per 100 MiB,
    // the largest cost of a push in a profile). TLS, or a connection that never leaves the
    // machine, already protects the bytes, and the registry verifies each blob's digest.
    client.middlewareStack.add(
      (next) => async (args) => {
        const request = args.request as { headers?: Record<string, string> };
        if (request.headers) request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD";
        return next(args);
      },
      { step: "build", name: "ferryUnsignedPayload" },
    );
  }
  return client;
}

/** HTTPS (AWS when no endpoint is given), or plain HTTP to a loopback address. */
export function payloadProtectedInTransit(endpoint: string | undefined): boolean {
  if (endpoint === undefined) return true;
  return new URL(endpoint).protocol === "https:" || isLoopbackEndpoint(endpoint);
}

export function isLoopbackEndpoint(endpoint: string | undefined): boolean {
  if (endpoint === undefined) return false;
  const { hostname } = new URL(endpoint);
  return /^127\.\d+\.\d+\.\d+$/.test(hostname) || hostname === "[::1]" || hostname === "localhost";
}

interface SdkErrorShape {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

function shape(error: unknown): SdkErrorShape {
  return typeof error === "object" && error !== null ? (error as SdkErrorShape) : {};
}

export function httpStatusOf(error: unknown): number | undefined {
  return shape(error).$metadata?.httpStatusCode;
}

/** The S3 error code (NoSuchKey, AccessDenied, …) or the network error code (ECONNREFUSED, …). */
export function s3ErrorName(error: unknown): string {
  const { name, code } = shape(error);
  if (code && /^E[A-Z]+$/.test(code)) return code;
  return name ?? code ?? "Error";
}

/** The object (or upload) is not there; a missing bucket is not this, it is a configuration error. */
export function isMissing(error: unknown): boolean {
  const name = s3ErrorName(error);
  if (name === "NoSuchBucket") return false;
  return name === "NoSuchKey" || name === "NotFound" || name === "NoSuchUpload" || httpStatusOf(error) === 404;
}

export function isPreconditionFailed(error: unknown): boolean {
  return s3ErrorName(error) === "PreconditionFailed" || httpStatusOf(error) === 412;
}

/**
 * What the client is told when the object store fails: 503 UNAVAILABLE with
 * the store's error name, never its message (it may name the bucket or keys).
 */
export function storeUnavailable(error: unknown, action: string): RegistryError {
  if (error instanceof RegistryError) return error;
  const name = s3ErrorName(error);
  const status = httpStatusOf(error);
  const failure = new RegistryError("UNAVAILABLE", `the object store failed while ${action}; nothing was stored by this request, retry later`, {
    status: 503,
    detail: { store: "s3", reason: name, ...(status !== undefined ? { status } : {}) },
  });
  // For logs and debugging only: never rendered to clients.
  Object.defineProperty(failure, "cause", { value: error, enumerable: false });
  return failure;
}

/** One line about an S3 failure for an operator: the code, the status and S3's own message. */
export function describeS3Error(error: unknown): string {
  const { message } = shape(error);
  const name = s3ErrorName(error);
  const status = httpStatusOf(error);
  const text = message && message !== name && message !== "UnknownError" ? `: ${message}` : "";
  return `${name}${status !== undefined ? ` (HTTP ${status})` : ""}${text}`;
}
