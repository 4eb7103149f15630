/** /v2/<name>/blobs/uploads/ (distribution-spec "Pushing blobs", "Mounting a blob"). */
import { parseDigest, parseDigestAlgorithm } from "../../oci/digest.js";
import { RegistryError, isRegistryError } from "../../oci/errors.js";
import { assertRepositoryName } from "../../oci/reference.js";
import type { RequestContext } from "../context.js";
import { send } from "../respond.js";
import { contentLength, hasBody, parseContentRange } from "../request.js";
import type { CommittedBlob, UploadStatus } from "../../registry/uploads.js";
import { notify } from "../../notifications/http-events.js";
import { BLOB_MEDIA_TYPE } from "../../notifications/events.js";

function uploadLocation(name: string, id: string): string {
  return `/v2/${name}/blobs/uploads/${id}`;
}

/** The spec's Range for an upload: inclusive end of the bytes received ("0-0" for none, as distribution answers). */
function rangeHeader(size: number): string {
  return `0-${Math.max(size - 1, 0)}`;
}

function sendSession(ctx: RequestContext, name: string, status: number, upload: UploadStatus): void {
  send(ctx.res, status, {
    Location: uploadLocation(name, upload.id),
    Range: rangeHeader(upload.size),
    "Docker-Upload-UUID": upload.id,
  });
}

function sendCommitted(ctx: RequestContext, name: string, digest: string): void {
  send(ctx.res, 201, { Location: `/v2/${name}/blobs/${digest}`, "Docker-Content-Digest": digest });
}

/** POST: start a session, push monolithically with ?digest=, or mount with ?mount=. */
export async function startUpload(ctx: RequestContext, name: string): Promise<void> {
  const { query, services, req } = ctx;
  // Checked, not kept: the digest in the closing PUT (or ?digest=) decides how the bytes are verified.
  const algorithm = query.get("digest-algorithm");
  if (algorithm !== null) parseDigestAlgorithm(algorithm);
  const mount = query.get("mount");
  if (mount !== null) {
    const from = query.get("from");
    const mounted = await tryMount(ctx, name, mount, from);
    if (mounted) {
      notify(ctx, "mount", { ...blobTarget(name, mounted), ...(from !== null ? { fromRepository: from } : {}) });
      sendCommitted(ctx, name, mounted.digest);
      return;
    }
  }
  const digest = query.get("digest");
  if (digest !== null && mount === null) {
    const expected = parseDigest(digest);
    const blob = await services.uploads.putMonolithic(name, expected, ctx.body, contentLength(req));
    notify(ctx, "push", blobTarget(name, blob));
    sendCommitted(ctx, name, blob.digest);
    return;
  }
  const upload = await services.uploads.start(name);
  sendSession(ctx, name, 202, upload);
}

/** A mount that cannot happen (unknown blob, no access, bad input) falls back to a new session, as the spec says. */
async function tryMount(ctx: RequestContext, name: string, mount: string, from: string | null): Promise<CommittedBlob | null> {
  try {
    const { digest } = parseDigest(mount);
    if (from !== null) assertRepositoryName(from);
    const mounted = await ctx.services.uploads.mount(name, digest, from, ctx.principal);
    return mounted ?? null;
  } catch (error) {
    if (isRegistryError(error)) return null;
    throw error;
  }
}

export async function uploadStatus(ctx: RequestContext, name: string, id: string): Promise<void> {
  const upload = await ctx.services.uploads.status(name, id);
  sendSession(ctx, name, 204, upload);
}

export async function patchUpload(ctx: RequestContext, name: string, id: string): Promise<void> {
  const { req, services } = ctx;
  const range = parseContentRange(req.headers["content-range"]);
  try {
    const upload = await services.uploads.append(name, id, ctx.body, range, contentLength(req));
    sendSession(ctx, name, 202, upload);
  } catch (error) {
    throw withSessionLocation(error, name, id);
  }
}

export async function finishUpload(ctx: RequestContext, name: string, id: string): Promise<void> {
  const { req, query, services } = ctx;
  const digest = query.get("digest");
  if (digest === null) {
    throw new RegistryError("DIGEST_INVALID", "completing an upload needs the blob's digest in ?digest=", { status: 400 });
  }
  const expected = parseDigest(digest);
  const body = hasBody(req) ? ctx.body : null;
  const range = body ? parseContentRange(req.headers["content-range"]) : null;
  try {
    const blob = await services.uploads.finish(name, id, expected, body, range, body ? contentLength(req) : null);
    notify(ctx, "push", blobTarget(name, blob));
    sendCommitted(ctx, name, blob.digest);
  } catch (error) {
    throw withSessionLocation(error, name, id);
  }
}

export async function cancelUpload(ctx: RequestContext, name: string, id: string): Promise<void> {
  await ctx.services.uploads.cancel(name, id);
  send(ctx.res, 204, {});
}

function blobTarget(name: string, blob: CommittedBlob) {
  return { mediaType: BLOB_MEDIA_TYPE, size: blob.size, digest: blob.digest, length: blob.size, repository: name };
}

/** A 416 tells the client where to resume, so it carries the session's Location (distribution-spec "Pushing a blob in chunks"). */
function withSessionLocation(error: unknown, name: string, id: string): unknown {
  if (isRegistryError(error) && error.status === 416) {
    error.headers.Location = uploadLocation(name, id);
    error.headers["Docker-Upload-UUID"] = id;
  }
  return error;
}
