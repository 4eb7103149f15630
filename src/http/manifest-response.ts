/**
 * The response headers of a manifest GET, HEAD and 304, built once per stored
 * record. Hot manifests come from the manifest cache as the same record object
 * request after request, so their headers are built (and made header-safe)
 * once instead of spread, merged and scanned on every request.
 */
import type { ManifestRecord } from "../metadata/meta-store.js";
import { API_VERSION_HEADER, safeHeaders, type Headers } from "./respond.js";

export interface ManifestResponse {
  /** The quoted digest clients send back in If-None-Match. */
  etag: string;
  /** GET and HEAD: every header, Content-Length included. */
  full: Headers;
  /** 304: the same without a body length. */
  notModified: Headers;
}

const built = new WeakMap<ManifestRecord, ManifestResponse>();

export function manifestResponse(record: ManifestRecord): ManifestResponse {
  let response = built.get(record);
  if (response === undefined) {
    const etag = `"${record.digest}"`;
    const common = { ...API_VERSION_HEADER, "Content-Type": record.mediaType, "Docker-Content-Digest": record.digest, ETag: etag };
    response = {
      etag,
      full: safeHeaders({ ...common, "Content-Length": record.content.length }),
      notModified: safeHeaders({ ...common, "Content-Length": 0 }),
    };
    built.set(record, response);
  }
  return response;
}
