/**
 * Small HTTP helpers for the spec-derived registry tests: push blobs and
 * manifests over the real API, read error bodies, and send raw requests
 * that fetch would normalise away (literal `..`, bad Content-Length).
 *
 * Everything here talks to the server only through HTTP, as a client would.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { sha256 } from "../helpers/images.js";
import { connect } from "node:net";

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
export const OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip";
export const OCI_EMPTY = "application/vnd.oci.empty.v1+json";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json";
export const DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip";
export const DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
export const OCI_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

/** distribution-spec 1.1 "Error Codes": "The code field MUST be one of the following". */
export const SPEC_ERROR_CODES = [
  "BLOB_UNKNOWN",
  "BLOB_UPLOAD_INVALID",
  "BLOB_UPLOAD_UNKNOWN",
  "DIGEST_INVALID",
  "MANIFEST_BLOB_UNKNOWN",
  "MANIFEST_INVALID",
  "MANIFEST_UNKNOWN",
  "NAME_INVALID",
  "NAME_UNKNOWN",
  "SIZE_INVALID",
  "UNAUTHORIZED",
  "DENIED",
  "UNSUPPORTED",
  "TOOMANYREQUESTS",
];

/** The one digest helper the tests share (test/helpers/images.ts), re-exported for the HTTP tests. */
export { sha256 };

export function sha512(data: Buffer | string): string {
  return `sha512:${createHash("sha512").update(data).digest("hex")}`;
}

let uniq = 0;
/** Random repository-name-safe suffix so tests sharing a server never collide. */
export function uid(prefix = "r"): string {
  return `${prefix}${Date.now().toString(36)}${(uniq++).toString(36)}${randomBytes(3).toString("hex")}`;
}

export interface ErrorEntry {
  code: string;
  message?: string;
  detail?: unknown;
}

/** Options shared by every request: never follow redirects (we assert on them). */
export async function req(url: string, init: RequestInit = {}): Promise<Response> {
  return fetch(url, { redirect: "manual", ...init });
}

/** Resolves a Location header (absolute or relative, RFC 7231 7.1.2) against the registry URL. */
export function resolveLocation(base: string, res: Response): string {
  const location = res.headers.get("location");
  assert.ok(location, `expected a Location header on ${res.status}`);
  return new URL(location, base).toString();
}

/** Appends query parameters to a URL that may already carry some (the spec: Location MAY contain critical query parameters). */
export function withQuery(url: string, params: Record<string, string>): string {
  const u = new URL(url);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u.toString();
}

/**
 * Asserts a 4xx answer with the spec's error body:
 * `{"errors":[{"code","message","detail"}]}`, code from the spec's list.
 * Returns the entries for further checks.
 */
export async function expectError(res: Response, status: number | number[], code?: string | string[]): Promise<ErrorEntry[]> {
  const statuses = Array.isArray(status) ? status : [status];
  const text = res.status === 0 ? "" : await res.text();
  assert.ok(
    statuses.includes(res.status),
    `expected status ${statuses.join("/")}, got ${res.status} ${text.slice(0, 300)}`,
  );
  if (res.headers.get("content-type")?.includes("json") || text.trim().startsWith("{")) {
    let body: unknown;
    assert.doesNotThrow(() => (body = JSON.parse(text)), `error body is not JSON: ${text.slice(0, 200)}`);
    const errors = (body as { errors?: unknown }).errors;
    assert.ok(Array.isArray(errors) && errors.length > 0, `error body lacks a non-empty "errors" array: ${text.slice(0, 300)}`);
    for (const entry of errors as ErrorEntry[]) {
      assert.equal(typeof entry.code, "string", "each error has a code");
      assert.match(entry.code, /^[A-Z_]+$/, "code: only uppercase alphabetic characters and underscores");
      assert.ok(SPEC_ERROR_CODES.includes(entry.code), `error code ${entry.code} is not one of the spec's codes`);
      if (entry.message !== undefined) assert.equal(typeof entry.message, "string");
    }
    if (code !== undefined) {
      const codes = Array.isArray(code) ? code : [code];
      assert.ok(
        (errors as ErrorEntry[]).some((e) => codes.includes(e.code)),
        `expected code ${codes.join("|")}, got ${(errors as ErrorEntry[]).map((e) => e.code).join(",")}`,
      );
    }
    return errors as ErrorEntry[];
  }
  // HEAD answers carry no body; anything else must say what went wrong in the spec format.
  if (code !== undefined && res.status !== 0) {
    assert.fail(`expected a JSON error body with code ${String(code)}, got: ${text.slice(0, 200) || "(empty body)"}`);
  }
  return [];
}

/** Starts an upload session and returns its absolute URL. */
export async function startUpload(base: string, repo: string): Promise<{ url: string; res: Response }> {
  const res = await req(`${base}/v2/${repo}/blobs/uploads/`, { method: "POST", headers: { "Content-Length": "0" } });
  assert.equal(res.status, 202, `POST upload: ${res.status} ${await res.clone().text()}`);
  return { url: resolveLocation(base, res), res };
}

/** Pushes a blob with POST + PUT ?digest= (the most widely used monolithic flow). */
export async function pushBlob(base: string, repo: string, data: Buffer | string): Promise<string> {
  const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data);
  const digest = sha256(bytes);
  const { url } = await startUpload(base, repo);
  const res = await req(withQuery(url, { digest }), {
    method: "PUT",
    headers: { "Content-Type": "application/octet-stream" },
    body: new Uint8Array(bytes),
  });
  assert.equal(res.status, 201, `PUT blob: ${res.status} ${await res.text()}`);
  return digest;
}

export interface PushedManifest {
  digest: string;
  bytes: Buffer;
  mediaType: string;
  res: Response;
}

export async function putManifest(
  base: string,
  repo: string,
  reference: string,
  manifest: unknown,
  mediaType: string,
): Promise<Response> {
  const bytes = Buffer.isBuffer(manifest) ? manifest : Buffer.from(typeof manifest === "string" ? manifest : JSON.stringify(manifest));
  return req(`${base}/v2/${repo}/manifests/${reference}`, {
    method: "PUT",
    headers: { "Content-Type": mediaType },
    body: new Uint8Array(bytes),
  });
}

/** PUTs a manifest and asserts 201. */
export async function pushManifest(
  base: string,
  repo: string,
  reference: string,
  manifest: unknown,
  mediaType: string,
): Promise<PushedManifest> {
  const bytes = Buffer.isBuffer(manifest) ? manifest : Buffer.from(typeof manifest === "string" ? manifest : JSON.stringify(manifest));
  const res = await putManifest(base, repo, reference, bytes, mediaType);
  assert.equal(res.status, 201, `PUT manifest ${repo}:${reference}: ${res.status} ${await res.clone().text()}`);
  return { digest: sha256(bytes), bytes, mediaType, res };
}

import type { Descriptor } from "../../src/oci/manifest.js";
export type { Descriptor };

export function descriptor(mediaType: string, bytes: Buffer | string, extra: Partial<Descriptor> = {}): Descriptor {
  const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes);
  return { mediaType, digest: sha256(b), size: b.length, ...extra };
}

/** Pushes a config and one layer, returns an OCI image manifest object referencing them. */
export async function makeImage(
  base: string,
  repo: string,
  options: { mediaType?: string; configType?: string; layerType?: string; seed?: string; extra?: Record<string, unknown> } = {},
): Promise<Record<string, unknown>> {
  const seed = options.seed ?? randomBytes(8).toString("hex");
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", seed }));
  const layer = Buffer.concat([Buffer.from(`layer-${seed}-`), randomBytes(64)]);
  await pushBlob(base, repo, config);
  await pushBlob(base, repo, layer);
  const mediaType = options.mediaType ?? OCI_MANIFEST;
  const docker = mediaType === DOCKER_MANIFEST;
  return {
    schemaVersion: 2,
    mediaType,
    config: descriptor(options.configType ?? (docker ? DOCKER_CONFIG : OCI_CONFIG), config),
    layers: [descriptor(options.layerType ?? (docker ? DOCKER_LAYER : OCI_LAYER), layer)],
    ...options.extra,
  };
}

/** The OCI empty descriptor's blob `{}` (image-spec "Guidance for an Empty Descriptor"). */
export const EMPTY_JSON = Buffer.from("{}");

export async function pushArtifact(
  base: string,
  repo: string,
  fields: Record<string, unknown>,
  reference?: string,
): Promise<PushedManifest> {
  await pushBlob(base, repo, EMPTY_JSON);
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: descriptor(OCI_EMPTY, EMPTY_JSON),
    layers: [descriptor(OCI_EMPTY, EMPTY_JSON)],
    ...fields,
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  return pushManifest(base, repo, reference ?? sha256(bytes), bytes, OCI_MANIFEST);
}

export interface RawResponse {
  status: number;
  headers: string;
  body: string;
  raw: string;
}

/**
 * Sends bytes exactly as given over a TCP socket (no URL normalisation, any
 * header) and returns what came back. Used for inputs fetch refuses to send.
 */
export function rawRequest(base: string, request: string | Buffer, timeoutMs = 5000): Promise<RawResponse> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: url.hostname, port: Number(url.port) });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      finish();
    }, timeoutMs);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const raw = Buffer.concat(chunks).toString("latin1");
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(raw);
      const split = raw.indexOf("\r\n\r\n");
      resolve({
        status: match ? Number(match[1]) : 0,
        headers: split === -1 ? raw : raw.slice(0, split),
        body: split === -1 ? "" : raw.slice(split + 4),
        raw,
      });
    };
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      // One response is all we want: stop once the declared body has arrived.
      const text = Buffer.concat(chunks).toString("latin1");
      const split = text.indexOf("\r\n\r\n");
      if (split !== -1) {
        const length = /\r\ncontent-length:\s*(\d+)/i.exec(text.slice(0, split));
        if (length && text.length - split - 4 >= Number(length[1])) socket.end();
        if (/\r\ntransfer-encoding:\s*chunked/i.test(text.slice(0, split)) && text.endsWith("0\r\n\r\n")) socket.end();
      }
    });
    socket.on("end", finish);
    socket.on("close", finish);
    socket.on("error", (error: NodeJS.ErrnoException) => {
      // A server that resets a connection after answering still answered.
      if (chunks.length > 0 || error.code === "ECONNRESET" || error.code === "EPIPE") finish();
      else reject(error);
    });
    socket.write(request);
  });
}

/**
 * Asserts a reply leaks nothing about the server's internals: no filesystem
 * path of the data directory or the source tree, no stack trace, no raw
 * errno or SQLite message.
 */
export function assertNoLeak(text: string, dataDir: string, context: string): void {
  const needles = [dataDir, process.cwd(), "/tmp/", "node_modules", "node:internal", "ENOENT", "EISDIR", "EACCES", "SQLITE", "sqlite"];
  for (const needle of needles) {
    assert.ok(!text.includes(needle), `${context}: response contains "${needle}": ${text.slice(0, 400)}`);
  }
  assert.doesNotMatch(text, /\n\s+at .+\(.*:\d+:\d+\)/, `${context}: response contains a stack trace`);
  assert.doesNotMatch(text, /\.(?:ts|js):\d+/, `${context}: response names a source file`);
}

/** Opens an upload session in `repository` over a raw connection (no client pooling) and returns its Location. */
export async function newUploadSession(base: string, repository: string): Promise<string> {
  const start = await rawRequest(base, `POST /v2/${repository}/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
  if (start.status !== 202) throw new Error(`POST to start an upload: ${start.raw.slice(0, 200)}`);
  const location = /\r\nlocation: ([^\r]+)/i.exec(start.headers)?.[1];
  if (!location) throw new Error("no Location on the upload session");
  return location;
}
