/** /v2/<name>/manifests/<reference> (distribution-spec "Pulling manifests", "Pushing Manifests", "Deleting Manifests"). */
import { parseManifestReference, parseReferenceForLookup } from "../../oci/reference.js";
import { normalizeContentType } from "../../oci/media-types.js";
import type { RequestContext } from "../context.js";
import { asciiHeaderText, send, sendPrepared, type Headers } from "../respond.js";
import { manifestResponse } from "../manifest-response.js";
import { readBody } from "../request.js";
import { tagParams } from "../tag-params.js";
import { notify } from "../../notifications/http-events.js";

export async function getManifest(ctx: RequestContext, name: string, rawReference: string): Promise<void> {
  const reference = parseReferenceForLookup(rawReference);
  const { services, req, res } = ctx;
  const record = await services.manifests.get(name, reference);
  await services.federation.gateManifest({ repository: name, manifestDigest: record.digest, headers: req.headers });
  const response = manifestResponse(record);
  if (req.headers["if-none-match"] === response.etag) {
    sendPrepared(res, 304, response.notModified);
    return;
  }
  if (ctx.method === "HEAD") {
    sendPrepared(res, 200, response.full);
    return;
  }
  // Emitted before the answer is sent: the event is queued in the same turn of the event loop.
  notify(ctx, "pull", { mediaType: record.mediaType, size: record.size, digest: record.digest, length: record.size, repository: name, ...tagOf(reference) });
  sendPrepared(res, 200, response.full, record.content);
}

export async function putManifest(ctx: RequestContext, name: string, rawReference: string): Promise<void> {
  const reference = parseManifestReference(rawReference);
  const { services, req, res } = ctx;
  const extraTags = tagParams(ctx.query, reference);
  const body = await readBody(req, ctx.body, services.manifestMaxBytes, "the manifest");
  const pushed = await services.manifests.push({
    repository: name,
    reference,
    body,
    contentType: normalizeContentType(req.headers["content-type"]),
    extraTags,
  });
  ctx.audit = { ...ctx.audit, digest: pushed.digest, previousDigest: pushed.previousDigest };
  const headers: Headers = {
    Location: `/v2/${name}/manifests/${pushed.digest}`,
    "Docker-Content-Digest": pushed.digest,
  };
  if (pushed.subject) headers["OCI-Subject"] = pushed.subject;
  // "MUST include an OCI-Tag response header ... for each accepted tag" (only when `tag` parameters were sent).
  if (extraTags.length > 0) headers["OCI-Tag"] = extraTags;
  if (pushed.warnings.length > 0) headers.Warning = pushed.warnings.map(formatWarning);
  const pushedTarget = { mediaType: pushed.mediaType, size: body.length, digest: pushed.digest, length: body.length, repository: name };
  notify(ctx, "push", { ...pushedTarget, ...tagOf(reference) });
  // One event per tag set with `?tag=` parameters, as if each had been pushed by that tag.
  for (const tag of extraTags) notify(ctx, "push", { ...pushedTarget, tag });
  send(res, 201, headers);
}

export async function deleteManifest(ctx: RequestContext, name: string, rawReference: string): Promise<void> {
  const reference = parseReferenceForLookup(rawReference);
  // Deleting a manifest deletes its tags: distribution reports each as a tag delete, and so does Ferry.
  const tags = reference.kind === "digest" && ctx.services.events?.wants("delete") ? await ctx.services.manifests.tagsOf(name, reference.digest.digest) : [];
  await ctx.services.manifests.delete(name, reference);
  notify(ctx, "delete", { repository: name, ...(reference.kind === "tag" ? { tag: reference.tag } : { digest: reference.digest.digest }) });
  for (const tag of tags) notify(ctx, "delete", { repository: name, tag });
  send(ctx.res, 202, {});
}

function tagOf(reference: { kind: "tag"; tag: string } | { kind: "digest" }): { tag?: string } {
  return reference.kind === "tag" ? { tag: reference.tag } : {};
}

/**
 * distribution-spec 1.1 "Warnings": `Warning: 299 - "<text>"`. A header may
 * hold only visible ASCII safely (a character above U+00FF makes Node refuse
 * the whole response, after the manifest was stored), so everything else is
 * percent-encoded as UTF-8, the way a URL would write it; quotes become '.
 */
export function formatWarning(text: string): string {
  const clean = asciiHeaderText(text.replace(/["\\]/g, "'").replace(/[\r\n]+/g, " ").slice(0, 2000));
  return `299 - "${clean}"`;
}
