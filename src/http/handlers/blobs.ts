/** GET/HEAD/DELETE /v2/<name>/blobs/<digest> (distribution-spec "Pulling blobs", "Deleting Blobs"). */
import { pipeline } from "node:stream/promises";
import type { Readable } from "node:stream";
import { parseDigest } from "../../oci/digest.js";
import { RegistryError } from "../../oci/errors.js";
import type { RequestContext } from "../context.js";
import { API_VERSION_HEADER, isClientAbort, send, type Headers } from "../respond.js";
import { parseRange } from "../request.js";
import type { ForeignBlobResponse } from "../../federation/federation.js";
import { ClientGoneError, type BlobFile, type ByteRange, type DirectBody } from "../../storage/blob-store.js";
import { notify } from "../../notifications/http-events.js";
import { BLOB_MEDIA_TYPE } from "../../notifications/events.js";
import { copyBufferBytesFor, nativeTransferResponse, reserveNativeTransfer, type NativeTransferMode } from "../sendfile.js";

export async function getBlob(ctx: RequestContext, name: string, rawDigest: string): Promise<void> {
  const { digest } = parseDigest(rawDigest);
  const head = ctx.method === "HEAD";
  const { services, req, res } = ctx;
  const lookup = await services.blobs.lookup(name, digest);
  if (lookup.kind === "foreign") {
    const range = parseRange(req.headers.range, lookup.mark.size);
    if (range.kind === "unsatisfiable") throw rangeNotSatisfiable(lookup.mark.size);
    const response = await services.blobs.serveForeign(name, lookup.mark, head ? "HEAD" : "GET", range.kind === "range" ? range.range : undefined);
    if (!head) notifyPull(ctx, name, digest, lookup.mark.size);
    await sendForeign(ctx, digest, response);
    return;
  }
  const etag = `"${digest}"`;
  const common: Headers = {
    "Docker-Content-Digest": digest,
    ETag: etag,
    "Accept-Ranges": "bytes",
    "Cache-Control": "max-age=31536000, immutable",
  };
  if (req.headers["if-none-match"] === etag) {
    send(res, 304, common);
    return;
  }
  const redirect = await services.blobStore.redirectUrl?.(digest, { method: head ? "HEAD" : "GET", expiresInMs: 20 * 60_000 });
  if (redirect) {
    if (!head) notifyPull(ctx, name, digest, lookup.size);
    send(res, 307, { ...common, Location: redirect });
    return;
  }
  const range = parseRange(req.headers.range, lookup.size);
  if (range.kind === "unsatisfiable") throw rangeNotSatisfiable(lookup.size);
  const partial = range.kind === "range";
  const headers: Headers = {
    ...common,
    "Content-Type": "application/octet-stream",
    "Content-Length": partial ? range.range.end - range.range.start + 1 : lookup.size,
  };
  if (partial) headers["Content-Range"] = `bytes ${range.range.start}-${range.range.end}/${lookup.size}`;
  const status = partial ? 206 : 200;
  if (!head) notifyPull(ctx, name, digest, lookup.size);
  if (head) {
    send(res, status, headers);
    return;
  }
  const length = headers["Content-Length"] as number;
  const transfer = services.blobTransfer ?? "stream";
  if (transfer !== "stream" && (await sendLocalFile(ctx, transfer, status, headers, digest, partial ? range.range : undefined, length))) return;
  const direct = await services.blobs.openToSend(digest, partial ? range.range : undefined, length);
  if (direct) return sendDirect(ctx, status, headers, direct);
  const body = await services.blobs.open(digest, partial ? range.range : undefined);
  await streamBody(ctx, status, headers, body);
}

/** A blob the store sends through reused buffers (S3 on plain HTTP); a failure mid-body ends the connection. */
async function sendDirect(ctx: RequestContext, status: number, headers: Headers, body: DirectBody): Promise<void> {
  const { res } = ctx;
  res.writeHead(status, { ...API_VERSION_HEADER, ...headers });
  try {
    await body.sendTo(res);
    res.end();
  } catch (error) {
    body.abort();
    res.destroy();
    if (!(error instanceof ClientGoneError) && !isClientAbort(error)) ctx.services.logger.warn({ err: error, requestId: ctx.requestId }, "blob stream failed");
  }
}

/**
 * Large local blobs on plain HTTP go out from the native addon's thread, by
 * copy or sendfile(2) (src/http/sendfile.ts); false when this response must
 * be streamed instead (nothing was written yet).
 */
async function sendLocalFile(
  ctx: RequestContext,
  mode: NativeTransferMode,
  status: number,
  headers: Headers,
  digest: string,
  range: ByteRange | undefined,
  length: number,
): Promise<boolean> {
  const slot = reserveNativeTransfer(ctx.res, length);
  if (!slot) return false;
  let file: BlobFile | null;
  try {
    file = await ctx.services.blobs.openFile(digest);
  } catch (error) {
    slot.release();
    throw error;
  }
  if (!file) {
    slot.release();
    return false;
  }
  try {
    const outcome = await nativeTransferResponse(slot, ctx.res, {
      status,
      headers: { ...API_VERSION_HEADER, ...headers },
      fd: file.fd,
      offset: range?.start ?? 0,
      length,
      copyBufferBytes: copyBufferBytesFor(mode),
    });
    if (!outcome.ok && !outcome.clientGone) {
      ctx.services.logger.warn({ err: outcome.error, requestId: ctx.requestId, digest, bytesSent: outcome.bytes }, "native blob transfer failed");
    }
  } finally {
    await file.close().catch(() => undefined);
  }
  return true;
}

function rangeNotSatisfiable(size: number): RegistryError {
  // distribution-spec: codes MUST come from its list; 416 plus Content-Range tells clients the rest.
  return new RegistryError("UNSUPPORTED", `the requested range is outside the blob's ${size} bytes`, {
    status: 416,
    headers: { "Content-Range": `bytes */${size}` },
    detail: { size },
  });
}

async function sendForeign(ctx: RequestContext, digest: string, response: ForeignBlobResponse): Promise<void> {
  const { res } = ctx;
  const common: Headers = { "Docker-Content-Digest": digest };
  switch (response.kind) {
    case "redirect":
      send(res, 307, { ...common, Location: response.location });
      return;
    case "head":
      send(res, 200, { ...common, "Content-Type": "application/octet-stream", "Content-Length": response.size, ETag: `"${digest}"` });
      return;
    case "stream": {
      const headers: Headers = { ...common, "Content-Type": "application/octet-stream", ETag: `"${digest}"`, "Accept-Ranges": "bytes" };
      if (response.range) {
        headers["Content-Length"] = response.range.end - response.range.start + 1;
        headers["Content-Range"] = `bytes ${response.range.start}-${response.range.end}/${response.size}`;
      } else {
        headers["Content-Length"] = response.size;
      }
      await streamBody(ctx, response.range ? 206 : 200, headers, response.body);
      return;
    }
  }
}

/** Streams a body; a failure after the headers went out can only cut the connection. */
export async function streamBody(ctx: RequestContext, status: number, headers: Headers, body: Readable): Promise<void> {
  const { res } = ctx;
  res.writeHead(status, { ...API_VERSION_HEADER, ...headers });
  try {
    await pipeline(body, res);
  } catch (error) {
    body.destroy();
    res.destroy();
    if (!isClientAbort(error)) ctx.services.logger.warn({ err: error, requestId: ctx.requestId }, "blob stream failed");
  }
}

export async function deleteBlob(ctx: RequestContext, name: string, rawDigest: string): Promise<void> {
  const { digest } = parseDigest(rawDigest);
  await ctx.services.blobs.delete(name, digest);
  notify(ctx, "delete", { mediaType: BLOB_MEDIA_TYPE, digest, repository: name });
  send(ctx.res, 202, { "Docker-Content-Digest": digest });
}

function notifyPull(ctx: RequestContext, name: string, digest: string, size: number): void {
  notify(ctx, "pull", { mediaType: BLOB_MEDIA_TYPE, size, digest, length: size, repository: name });
}
