/**
 * The one place that defines the filesystem driver's layout:
 *   <root>/blobs/<algorithm>/<first two hex>/<hex>    committed blobs
 *   <root>/uploads/<upload id>                        data of an upload session
 * Upload ids are validated UUIDs, digests are validated before they get here,
 * so no path component ever comes from unchecked input.
 */
import { join } from "node:path";

export class FsPaths {
  constructor(readonly root: string) {}

  blob(digest: string): string {
    const [algorithm, hex] = splitDigest(digest);
    return join(this.root, "blobs", algorithm, hex.slice(0, 2), hex);
  }

  blobDir(digest: string): string {
    const [algorithm, hex] = splitDigest(digest);
    return join(this.root, "blobs", algorithm, hex.slice(0, 2));
  }

  blobsDir(): string {
    return join(this.root, "blobs");
  }

  uploadsDir(): string {
    return join(this.root, "uploads");
  }

  upload(uploadId: string): string {
    if (!/^[0-9a-f-]{36}$/.test(uploadId)) throw new Error("invalid upload id");
    return join(this.root, "uploads", uploadId);
  }
}

function splitDigest(digest: string): [string, string] {
  const match = /^(sha256|sha512):([0-9a-f]{64}|[0-9a-f]{128})$/.exec(digest);
  if (!match) throw new Error("invalid digest for storage path");
  return [match[1]!, match[2]!];
}
