/**
 * The optional native addon (native/sendfile, built by scripts/build-native.mjs
 * at `npm install`): zero-copy and off-thread blob transfers, and allocator
 * tuning. Everything that uses it has a pure-Node fallback; this module only
 * loads it once and says why when it cannot.
 */
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { constants as osConstants } from "node:os";

/** Called once on the JS thread when a transfer ends; errno 0 means every byte was sent. */
export type TransferDone = (errno: number, bytesSent: number, partialWrites: number) => void;

export interface NativeAddon {
  start(socketFd: number, fileFd: number, offset: number, length: number, idleTimeoutMs: number, done: TransferDone, copyBufferBytes: number): unknown;
  cancel(handle: unknown): boolean;
  setTrimThreshold(bytes: number): boolean;
  /** malloc_trim(0); missing in an addon built before it was added (then nothing is trimmed). */
  trimHeap?(): boolean;
  /** madvise(MADV_DONTNEED) on the whole pages of a view; absent from addons built before it was added. */
  discardPages?(view: Uint8Array): number;
  /** memcpy of `source` into `target` at `offset`; absent from addons built before it was added. */
  copyInto?(target: Uint8Array, offset: number, source: Uint8Array): number;
  /** Absent from addons built before request bodies could be received natively. */
  receive?(socketFd: number, target: Uint8Array | null, offset: number, length: number, idleTimeoutMs: number, done: (errno: number, bytes: number) => void): unknown;
  cancelReceive?(handle: unknown): boolean;
  /** Absent from addons built before bodies could be received into a file (see body-file.c). */
  receiveFile?(
    socketFd: number,
    directFd: number,
    bufferedFd: number,
    position: number,
    slabs: Uint8Array[],
    prefilled: number,
    state: Uint8Array | null,
    length: number,
    idleTimeoutMs: number,
    done: (errno: number, received: number, direct: number, buffered: number, diskFailed: boolean) => void,
  ): unknown;
  cancelReceiveFile?(handle: unknown): boolean;
  /** Present only where the process exports OpenSSL's SHA-256 functions (Node does). */
  sha256StateBytes?: number;
  sha256Init?(state: Uint8Array): void;
  sha256Update?(state: Uint8Array, bytes: Uint8Array): void;
  sha256Digest?(state: Uint8Array): Buffer;
  /** Absent from addons built before `ferry serve` had threads. */
  listenReusePort?(address: string, port: number, backlog: number, exclusive: boolean): number;
}

const ADDON_PATH = fileURLToPath(new URL("../../../native/sendfile/build/Release/ferry_sendfile.node", import.meta.url));

let loaded: { addon: NativeAddon } | { reason: string } | undefined;

export function loadNativeAddon(): { addon: NativeAddon } | { reason: string } {
  if (loaded) return loaded;
  if (process.platform !== "linux") return (loaded = { reason: `the native addon is used on Linux only (this is ${process.platform})` });
  try {
    const addon = createRequire(import.meta.url)(ADDON_PATH) as Partial<NativeAddon>;
    if (typeof addon.start !== "function" || typeof addon.cancel !== "function" || typeof addon.setTrimThreshold !== "function") {
      throw new Error("unexpected exports (rebuild it)");
    }
    loaded = { addon: addon as NativeAddon };
  } catch (error) {
    const message = error instanceof Error ? error.message.split("\n")[0] : String(error);
    loaded = { reason: `native addon not loaded (${message}); build it with: node scripts/build-native.mjs` };
  }
  return loaded;
}

/**
 * Keeps up to 8 MiB of freed heap mapped instead of returning it to the
 * kernel after every large request (see SetTrimThreshold in the C source for
 * the measurement). Returns whether the allocator took the setting.
 * It was 32 MiB: that much freed heap stayed resident after any push (the
 * benchmark mix's peak swung 148-200 MiB with whether glibc had trimmed), and
 * 8 MiB measured the same CPU per 100 MiB push (350 against 360 ms, median
 * of 12, 128 KiB also 350; docs/benchmarks-history.md, "Speed round 4").
 */
export function keepFreedHeapMapped(bytes = 8 * 1024 * 1024): boolean {
  const state = loadNativeAddon();
  return "addon" in state && state.addon.setTrimThreshold(bytes);
}

/**
 * Hands the free pages inside the C heap back to the kernel (glibc's
 * malloc_trim(0); see TrimHeap in the C source). For after a burst of big
 * pushes, once they have gone quiet: the heap they grew stays mapped and
 * resident otherwise, and refilling it later costs a page fault per 4 KiB.
 * Returns whether anything was released.
 */
export function trimFreedHeap(): boolean {
  const state = loadNativeAddon();
  return "addon" in state && typeof state.addon.trimHeap === "function" && state.addon.trimHeap();
}

/**
 * Drops the resident memory of the whole pages inside `view` (they read as
 * zeros afterwards; see DiscardPages in the C source), for scratch buffers a
 * pool keeps while pushes are quiet. Returns the bytes discarded: 0 without
 * the addon, and then the memory simply stays resident.
 */
export function discardPages(view: Uint8Array): number {
  const state = loadNativeAddon();
  return "addon" in state && typeof state.addon.discardPages === "function" ? state.addon.discardPages(view) : 0;
}

/** discardPages on each view; whether any memory went (what a pool's releaseIdle reports). */
export function discardEach(views: Iterable<Uint8Array>): boolean {
  let discarded = 0;
  for (const view of views) discarded += discardPages(view);
  return discarded > 0;
}

let nativeCopy: ((target: Uint8Array, offset: number, source: Uint8Array) => number) | null | undefined;

/**
 * Copies `source` into `target` at `offset` with a plain memcpy where the
 * addon is loaded (see CopyInto in the C source: V8 copies into a
 * SharedArrayBuffer with relaxed atomic moves, ~3x slower), else with
 * `set`. Only for shared memory no other thread reads during the copy.
 */
export function copyIntoShared(target: Uint8Array, offset: number, source: Uint8Array): void {
  if (nativeCopy === undefined) {
    const state = loadNativeAddon();
    nativeCopy = "addon" in state && typeof state.addon.copyInto === "function" ? state.addon.copyInto : null;
  }
  if (nativeCopy) nativeCopy(target, offset, source);
  else target.set(source, offset);
}

const PREDATES_THREADS = "the native addon predates threads (rebuild it: node scripts/build-native.mjs)";

/**
 * A listening TCP socket with SO_REUSEPORT on `address` ("" = every
 * interface; numeric, already resolved) and `port`, for one serving thread
 * (src/threads/): each thread listens on a socket of its own and the kernel
 * spreads new connections over them. `exclusive` first checks that nothing
 * else listens on the port. Returns the descriptor, the errno as an error
 * (code EADDRINUSE...), or why the addon cannot.
 */
export function listenReusePort(address: string, port: number, exclusive: boolean): { fd: number } | { error: NodeJS.ErrnoException } | { reason: string } {
  const state = loadNativeAddon();
  if (!("addon" in state)) return state;
  if (typeof state.addon.listenReusePort !== "function") return { reason: PREDATES_THREADS };
  const result = state.addon.listenReusePort(address, port, 511, exclusive);
  if (result >= 0) return { fd: result };
  const code = Object.entries(osConstants.errno).find(([, value]) => value === -result)?.[0] ?? `errno ${-result}`;
  return { error: Object.assign(new Error(`listen ${code}`), { code, errno: result }) };
}

/** Why listenReusePort cannot be used here, or undefined when it can. */
export function reusePortUnavailable(): string | undefined {
  const state = loadNativeAddon();
  if (!("addon" in state)) return state.reason;
  return typeof state.addon.listenReusePort === "function" ? undefined : PREDATES_THREADS;
}

/** A receive in flight (see startReceive): done resolves with 0 once every byte is in, else with the errno that ended it (ECONNRESET, ETIMEDOUT, ECANCELED...). */
export type NativeReceive = NativeJob<number>;

/** Whether startReceive can be used (the addon is loaded and has it). */
export function nativeReceiveAvailable(): boolean {
  const state = loadNativeAddon();
  return "addon" in state && typeof state.addon.receive === "function" && typeof state.addon.cancelReceive === "function";
}

/**
 * Reads and throws away up to `maxBytes` from the connection `socketFd` on a
 * thread of the addon's, until the peer closes (a normal end: errno 0), no
 * byte came for `idleTimeoutMs`, or it is cancelled. It holds a duplicate of
 * the descriptor, so the connection stays open until it ends even after Node
 * closed its own: a lingering close.
 */
export function startDiscard(socketFd: number, maxBytes: number, idleTimeoutMs: number): NativeReceive {
  return startReceive(socketFd, null, 0, maxBytes, idleTimeoutMs);
}

/**
 * Reads exactly `length` bytes from the connection `socketFd` into
 * target[offset, offset + length) on a thread of the addon's (see Receive in
 * the C source); no byte past them is read. Node must not read the socket
 * meanwhile, and `target` must not be reused before `done` settled.
 * Throws when the addon lacks it (check nativeReceiveAvailable first).
 */
export function startReceive(socketFd: number, target: Uint8Array | null, offset: number, length: number, idleTimeoutMs: number): NativeReceive {
  const state = loadNativeAddon();
  if (!("addon" in state) || !state.addon.receive || !state.addon.cancelReceive) throw new Error("native receive is not available");
  const { receive, cancelReceive } = state.addon;
  let resolveDone: (errno: number) => void = () => undefined;
  const done = new Promise<number>((resolve) => (resolveDone = resolve));
  // Throws (no descriptor, no thread) before anything is read; the timeout is a C int.
  const handle = receive(socketFd, target, offset, length, clampIdle(idleTimeoutMs), (errno) => resolveDone(errno));
  // No handle (the addon could not make one): the receive runs to its end or its timeout regardless.
  return { done, cancel: () => void (handle !== undefined && cancelReceive(handle)) };
}

/** Where receiveFile puts a body: an upload's file, through a ring of aligned slabs (see body-file.c). */
export interface FileSink {
  /** The file opened with O_DIRECT, and again without it (for the unaligned tail, and when the filesystem refuses a direct write). */
  readonly directFd: number;
  readonly bufferedFd: number;
  /** File position of slabs[0][0]. */
  readonly position: number;
  /** 1-8 slabs of one length, a multiple of 4096 (page-aligned for direct writes); untouched by JS until the receive ended. */
  readonly slabs: Uint8Array[];
  /** Body bytes slabs[0] already holds, not yet written or hashed. */
  readonly prefilled: number;
  /** The running hash to feed, or null. */
  readonly hash: NativeSha256 | null;
}

/** How a receiveFile ended. */
export interface FileSinkResult {
  /** 0 = every byte is in the file; else the errno that ended it. */
  readonly errno: number;
  /** Whether that errno is the file's (a write failed), not the connection's. */
  readonly diskFailed: boolean;
  readonly received: number;
  /** Bytes written with O_DIRECT, and through the page cache. */
  readonly direct: number;
  readonly buffered: number;
}

/** A native job in flight on a connection: a receive, a discard or a receive into a file. */
export interface NativeJob<T> {
  readonly done: Promise<T>;
  /** Stops it (done then reports ECANCELED); the connection can still be written. */
  cancel(): void;
}

/** Whether startReceiveFile can be used with a hash (the addon has it and SHA-256). */
export function nativeFileReceiveAvailable(): boolean {
  const state = loadNativeAddon();
  return "addon" in state && typeof state.addon.receiveFile === "function" && typeof state.addon.cancelReceiveFile === "function" && nativeSha256Available();
}

/**
 * Receives exactly `length` bytes from the connection `socketFd` into a file
 * (see FileSink and receiveFile in body-file.c): received, hashed and written
 * on the addon's threads, reported once. Node must not read the socket
 * meanwhile. Throws when no job could be started (no descriptor or thread).
 */
export function startReceiveFile(socketFd: number, sink: FileSink, length: number, idleTimeoutMs: number): NativeJob<FileSinkResult> {
  const state = loadNativeAddon();
  if (!("addon" in state) || !state.addon.receiveFile || !state.addon.cancelReceiveFile) throw new Error("native file receive is not available");
  const { receiveFile, cancelReceiveFile } = state.addon;
  let resolveDone: (result: FileSinkResult) => void = () => undefined;
  const done = new Promise<FileSinkResult>((resolve) => (resolveDone = resolve));
  const handle = receiveFile(
    socketFd,
    sink.directFd,
    sink.bufferedFd,
    sink.position,
    sink.slabs,
    sink.prefilled,
    sink.hash?.state ?? null,
    length,
    clampIdle(idleTimeoutMs),
    (errno, received, direct, buffered, diskFailed) => resolveDone({ errno, received, direct, buffered, diskFailed }),
  );
  return { done, cancel: () => void (handle !== undefined && cancelReceiveFile(handle)) };
}

/** Whether NativeSha256 can be used. */
export function nativeSha256Available(): boolean {
  const state = loadNativeAddon();
  return "addon" in state && typeof state.addon.sha256StateBytes === "number" && typeof state.addon.sha256Update === "function";
}

/**
 * SHA-256 whose running state is JS memory (OpenSSL's SHA256_CTX in a
 * Buffer), so a native job can go on feeding it on its own threads
 * (receiveFile) and the JS thread after it. Check nativeSha256Available first.
 */
export class NativeSha256 {
  readonly state: Buffer;
  private readonly addon: Required<Pick<NativeAddon, "sha256Init" | "sha256Update" | "sha256Digest">>;

  constructor() {
    const loadedAddon = loadNativeAddon();
    if (!("addon" in loadedAddon) || !nativeSha256Available()) throw new Error("native SHA-256 is not available");
    const { sha256Init, sha256Update, sha256Digest, sha256StateBytes } = loadedAddon.addon;
    this.addon = { sha256Init: sha256Init!, sha256Update: sha256Update!, sha256Digest: sha256Digest! };
    // Not from Buffer's shared pool: the state must not share memory a pooled Buffer could be handed.
    this.state = Buffer.alloc(sha256StateBytes!);
    this.addon.sha256Init(this.state);
  }

  update(bytes: Uint8Array): void {
    this.addon.sha256Update(this.state, bytes);
  }

  /** The digest in hex; the state cannot be fed afterwards. */
  hex(): string {
    return this.addon.sha256Digest(this.state).toString("hex");
  }
}

function clampIdle(idleTimeoutMs: number): number {
  return Math.min(Math.max(Math.round(idleTimeoutMs), 1), 2 ** 31 - 1);
}
