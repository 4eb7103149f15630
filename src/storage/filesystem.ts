/**
 * Filesystem blob store. Uploads are plain files written in place; commit is
 * an fsync (optional) followed by an atomic rename into the content-addressed
 * tree, so a reader sees either no blob or the whole verified blob.
 */
import { close, constants as fsConstants, createReadStream, fdatasync, fstat, ftruncate, open as openCallback } from "node:fs";
import { copyFile, mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { promisify } from "node:util";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { FsPaths } from "./fs-paths.js";
import { BatchedFileWriter } from "./batched-file-writer.js";
import { DIRECT_ALIGN, DirectFileWriter } from "./direct-file-writer.js";
import { sharedAlignedSlabs } from "./aligned-slabs.js";
import { handoffOffer } from "./body-handoff.js";
import { writeHandedOver } from "./handed-over.js";
import { threadId } from "node:worker_threads";
import {
  BlobNotFoundError,
  UploadLengthError,
  UploadOffsetError,
  UploadTooLargeError,
  type AppendOptions,
  type BlobFile,
  type BlobStat,
  type BlobStore,
  type ByteRange,
} from "./blob-store.js";

export interface FilesystemOptions {
  root: string;
  /** fsync data (and the directory entry) before a blob becomes visible. */
  fsync: boolean;
  /**
   * Write uploads with O_DIRECT when the filesystem supports it (see
   * direct-file-writer.ts); falls back to the page cache by itself. Default true.
   */
  directIo?: boolean;
}

const openFd = promisify(openCallback);
const closeFd = promisify(close);
const fstatFd = promisify(fstat);
const datasyncFd = promisify(fdatasync);
const ftruncateFd = promisify(ftruncate);
const READ_CHUNK = 256 * 1024;
const EARLY_FLUSH_BYTES = 8 * 1024 * 1024;

export class FilesystemBlobStore implements BlobStore {
  private readonly paths: FsPaths;
  private directUnsupported = false;

  constructor(private readonly options: FilesystemOptions) {
    this.paths = new FsPaths(options.root);
  }

  async init(): Promise<void> {
    await mkdir(this.paths.uploadsDir(), { recursive: true });
  }

  async stat(digest: string): Promise<BlobStat | null> {
    try {
      const info = await stat(this.paths.blob(digest));
      return { size: info.size };
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
  }

  async read(digest: string, range?: ByteRange): Promise<Readable> {
    const path = this.paths.blob(digest);
    let fd: number;
    try {
      fd = await openFd(path, "r");
    } catch (error) {
      if (isNotFound(error)) throw new BlobNotFoundError(digest);
      throw error;
    }
    // A plain fd stream reads about twice as fast as FileHandle.createReadStream,
    // whose every read goes through the promise API (measured on 100 MiB pulls).
    return createReadStream(path, { fd, autoClose: true, start: range?.start, end: range?.end, highWaterMark: READ_CHUNK });
  }

  async openFile(digest: string): Promise<BlobFile> {
    let fd: number;
    try {
      fd = await openFd(this.paths.blob(digest), "r");
    } catch (error) {
      if (isNotFound(error)) throw new BlobNotFoundError(digest);
      throw error;
    }
    let size: number;
    try {
      size = (await fstatFd(fd)).size;
    } catch (error) {
      await closeFd(fd).catch(() => undefined);
      throw error;
    }
    let closing: Promise<void> | undefined;
    return { fd, size, close: () => (closing ??= closeFd(fd)) };
  }

  async delete(digest: string): Promise<void> {
    await rm(this.paths.blob(digest), { force: true });
  }

  async *listBlobs(): AsyncIterable<{ digest: string; modifiedAt: number }> {
    const root = this.paths.blobsDir();
    for (const algorithm of await readdir(root).catch(() => [] as string[])) {
      if (algorithm !== "sha256" && algorithm !== "sha512") continue;
      for (const prefix of await readdir(join(root, algorithm)).catch(() => [] as string[])) {
        for (const hex of await readdir(join(root, algorithm, prefix)).catch(() => [] as string[])) {
          const digest = `${algorithm}:${hex}`;
          // Only names the layout could have produced; anything else is not ours to judge.
          if (!/^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/.test(digest) || !hex.startsWith(prefix)) continue;
          const info = await stat(join(root, algorithm, prefix, hex)).catch(() => undefined);
          if (info?.isFile()) yield { digest, modifiedAt: info.mtimeMs };
        }
      }
    }
  }

  async startUpload(uploadId: string): Promise<void> {
    const handle = await open(this.paths.upload(uploadId), "wx");
    await handle.close();
  }

  async uploadSize(uploadId: string): Promise<number | null> {
    try {
      return (await stat(this.paths.upload(uploadId))).size;
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
  }

  async appendUpload(uploadId: string, source: Readable, options: AppendOptions): Promise<number> {
    const path = this.paths.upload(uploadId);
    let fd: number;
    try {
      fd = await openFd(path, "r+");
    } catch (error) {
      if (isNotFound(error)) throw new BlobNotFoundError(uploadId);
      throw error;
    }
    try {
      const size = (await fstatFd(fd)).size;
      if (size !== options.offset) throw new UploadOffsetError(size);
      const written = await this.appendAt(fd, path, size, source, options);
      return size + written;
    } finally {
      await closeFd(fd);
    }
  }

  private async appendAt(fd: number, path: string, size: number, source: Readable, options: AppendOptions): Promise<number> {
    let written = 0;
    const { maxBytes, exactBytes } = options;
    // Flush to disk while the upload is still streaming, so the fsync at commit
    // only has the tail left: commit latency no longer grows with blob size.
    const flushEvery = this.options.fsync ? EARLY_FLUSH_BYTES : Infinity;
    let unflushed = 0;
    let flushing: Promise<void> | null = null;
    /** Counts bytes on their way to the file; the error to fail with when they are too many. */
    const count = (bytes: number): Error | null => {
      written += bytes;
      if (maxBytes !== undefined && written > maxBytes) return new UploadTooLargeError(`more than ${maxBytes} bytes`);
      if (exactBytes !== undefined && written > exactBytes) return new UploadLengthError(exactBytes, written);
      unflushed += bytes;
      if (unflushed >= flushEvery && flushing === null) {
        unflushed = 0;
        flushing = datasyncFd(fd).then(
          () => void (flushing = null),
          () => void (flushing = null),
        );
      }
      return null;
    };
    const directFd = await this.openDirect(path, size);
    // The direct writer feeds the hash from its own aligned copy of the bytes; without one, the meter does
    // (waiting when the hash asks, so a slow hasher slows the socket instead of growing memory).
    const hash = directFd === null ? options.hash : undefined;
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        const tooMany = count(chunk.length);
        if (tooMany) return callback(tooMany);
        const hashing = hash?.update(chunk);
        if (hashing) hashing.then(() => callback(null, chunk));
        else callback(null, chunk);
      },
      flush(callback) {
        callback(exactBytes !== undefined && written !== exactBytes ? new UploadLengthError(exactBytes, written) : null);
      },
    });
    try {
      if (directFd === null) {
        await pipeline(source, meter, new BatchedFileWriter(fd, size));
      } else {
        const writer = new DirectFileWriter(directFd, fd, size, sharedAlignedSlabs(), options.hash);
        // A body of known length the connection can hand over goes from the socket into the writer's slabs.
        const fits = exactBytes !== undefined && (maxBytes === undefined || exactBytes <= maxBytes);
        const handoff = fits ? await handoffOffer(source)?.takeOver(exactBytes) : null;
        if (handoff) await writeHandedOver(source, handoff, writer, count);
        else await pipeline(source, meter, writer);
      }
      await flushing;
      return written;
    } catch (error) {
      await flushing;
      // Keep the session consistent: drop whatever part of this append landed.
      await ftruncateFd(fd, size).catch(() => undefined);
      throw error;
    } finally {
      if (directFd !== null) await closeFd(directFd).catch(() => undefined);
    }
  }

  /**
   * A second descriptor on the session file opened with O_DIRECT, or null when
   * the append cannot use one: disabled, not at an aligned offset, or a
   * filesystem that refuses O_DIRECT (tmpfs, some network filesystems), which
   * is remembered so it is asked once.
   */
  private async openDirect(path: string, position: number): Promise<number | null> {
    if (this.directUnsupported || this.options.directIo === false || position % DIRECT_ALIGN !== 0) return null;
    const O_DIRECT = fsConstants.O_DIRECT;
    if (O_DIRECT === undefined) return null;
    try {
      return await openFd(path, fsConstants.O_WRONLY | O_DIRECT);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EINVAL") this.directUnsupported = true;
      return null;
    }
  }

  async readUpload(uploadId: string): Promise<Readable> {
    const path = this.paths.upload(uploadId);
    const handle = await open(path, "r").catch((error: unknown) => {
      throw isNotFound(error) ? new BlobNotFoundError(uploadId) : error;
    });
    return handle.createReadStream({ autoClose: true, highWaterMark: READ_CHUNK });
  }

  async syncUpload(uploadId: string): Promise<void> {
    const handle = await open(this.paths.upload(uploadId), "r+").catch((error: unknown) => {
      throw isNotFound(error) ? new BlobNotFoundError(uploadId) : error;
    });
    try {
      if (this.options.fsync) await handle.datasync();
    } finally {
      await handle.close();
    }
  }

  async commitUpload(uploadId: string, digest: string): Promise<void> {
    const source = this.paths.upload(uploadId);
    if (this.options.fsync) {
      const handle = await open(source, "r+");
      try {
        await handle.datasync();
      } finally {
        await handle.close();
      }
    }
    const dir = this.paths.blobDir(digest);
    await mkdir(dir, { recursive: true });
    // rename() replaces atomically; if the blob already exists the bytes are identical.
    await rename(source, this.paths.blob(digest));
    if (this.options.fsync) await syncDirectory(dir);
  }

  async detachUpload(uploadId: string): Promise<void> {
    // A copy under a new name, renamed over the session: the old inode, which
    // a stale writer may still have open, is no longer reachable by any path.
    const path = this.paths.upload(uploadId);
    const fresh = `${path}.detach-${process.pid}.${threadId}`;
    try {
      await copyFile(path, fresh);
      await rename(fresh, path);
    } catch (error) {
      await rm(fresh, { force: true });
      if (isNotFound(error)) throw new BlobNotFoundError(uploadId);
      throw error;
    }
  }

  async abortUpload(uploadId: string): Promise<void> {
    await rm(this.paths.upload(uploadId), { force: true });
  }

  async listUploads(): Promise<Array<{ id: string; modifiedAt: number }>> {
    const dir = this.paths.uploadsDir();
    const names = await readdir(dir).catch(() => [] as string[]);
    const out: Array<{ id: string; modifiedAt: number }> = [];
    for (const name of names) {
      const info = await stat(join(dir, name)).catch(() => undefined);
      if (!info) continue;
      if (/^[0-9a-f-]{36}$/.test(name)) out.push({ id: name, modifiedAt: info.mtimeMs });
      // A detach copy left by a crash mid-copy (detachUpload): nothing refers to it.
      else if (/\.detach-\d+$/.test(name) && info.mtimeMs < Date.now() - 3_600_000) await rm(join(dir, name), { force: true });
    }
    return out;
  }

  async close(): Promise<void> {}
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException)?.code === "ENOENT";
}
