/**
 * Blob reads and deletes. A repository sees a blob only through a link; a
 * foreign layer it references but does not hold is answered by federation.
 */
import type { Readable } from "node:stream";
import { RegistryError } from "../oci/errors.js";
import type { BlobFile, ByteRange, DirectBody } from "../storage/blob-store.js";
import { BlobNotFoundError } from "../storage/blob-store.js";
import type { ForeignBlobResponse } from "../federation/federation.js";
import type { RegistryDeps } from "./context.js";
import type { ForeignLayerMark } from "../metadata/meta-store.js";

export type BlobLookup =
  | { kind: "local"; digest: string; size: number }
  | { kind: "foreign"; digest: string; mark: ForeignLayerMark };

export class BlobService {
  constructor(private readonly deps: RegistryDeps) {}

  /**
   * Resolves a blob for HEAD or GET: held locally (open it with `open`), or a
   * foreign layer this repository references (answer it with `serveForeign`).
   */
  async lookup(repository: string, digest: string): Promise<BlobLookup> {
    const linked = await this.deps.meta.linkedBlob(repository, digest);
    if (linked) return { kind: "local", digest, size: linked.size };
    const mark = await this.deps.meta.getForeignLayer(repository, digest);
    if (mark) return { kind: "foreign", digest, mark };
    throw blobUnknown(digest);
  }

  /** Federation's answer for a foreign layer this registry does not hold. */
  async serveForeign(repository: string, mark: ForeignLayerMark, method: "GET" | "HEAD", range?: ByteRange): Promise<ForeignBlobResponse> {
    return this.deps.federation.serve({ repository, mark, method, range });
  }

  async open(digest: string, range?: ByteRange): Promise<Readable> {
    try {
      return await this.deps.blobs.read(digest, range);
    } catch (error) {
      if (error instanceof BlobNotFoundError) {
        // Metadata says yes, storage says no: report it as missing rather than crash.
        this.deps.logger.error({ digest }, "blob is linked but its bytes are missing from storage");
        throw blobUnknown(digest);
      }
      throw error;
    }
  }

  /** The blob opened for sending through reused buffers, or null when the store only streams (open). */
  async openToSend(digest: string, range: ByteRange | undefined, length: number): Promise<DirectBody | null> {
    if (!this.deps.blobs.openToSend) return null;
    try {
      return await this.deps.blobs.openToSend(digest, range, length);
    } catch (error) {
      if (error instanceof BlobNotFoundError) {
        this.deps.logger.error({ digest }, "blob is linked but its bytes are missing from storage");
        throw blobUnknown(digest);
      }
      throw error;
    }
  }

  /** The blob as an open local file, or null when the store does not keep blobs as local files. */
  async openFile(digest: string): Promise<BlobFile | null> {
    if (!this.deps.blobs.openFile) return null;
    try {
      return await this.deps.blobs.openFile(digest);
    } catch (error) {
      if (error instanceof BlobNotFoundError) {
        this.deps.logger.error({ digest }, "blob is linked but its bytes are missing from storage");
        throw blobUnknown(digest);
      }
      throw error;
    }
  }

  /** Unlinks the blob from the repository (distribution-spec "Deleting Blobs"); bytes go at GC. */
  async delete(repository: string, digest: string): Promise<void> {
    if (!(await this.deps.meta.unlinkBlob(repository, digest))) throw blobUnknown(digest);
  }
}

export function blobUnknown(digest: string): RegistryError {
  return new RegistryError("BLOB_UNKNOWN", `blob ${digest} is not known to this repository`, { detail: { digest } });
}
