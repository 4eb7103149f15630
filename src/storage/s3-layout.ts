/**
 * Where the S3 driver keeps things inside its bucket, and the per-session
 * state object. The only definition of the key layout:
 *
 *   <prefix>blobs/<algorithm>/<hex>          a committed, verified blob
 *   <prefix>uploads/<id>/state              the session's state as last written (a hint: see below)
 *   <prefix>uploads/<id>/state-<seq>        each version of the state, created once (If-None-Match: *)
 *   <prefix>uploads/<id>/piece-<offset>-<size>-<token>   bytes received but not yet part of a multipart part
 *   <prefix>uploads/<id>/data               the multipart upload's target (staging; never a digest)
 *
 * Everything a session needs to continue is in the bucket, so a chunked
 * upload continues after a restart or on another replica.
 *
 * Writers are fenced by the object store itself: version seq+1 of a state
 * can be created only once, so of two writers that read version seq (one of
 * them frozen past its lease and taken over) only one can save what it did;
 * the other's append fails. The `state` object only says which version to
 * start from: readers follow state-<seq+1>, … until one is missing, so a
 * stale or lost hint costs a HEAD, never a wrong answer. (Conditional PUT
 * with If-Match would do with one object, but Ceph RGW 16 answers 412 to it
 * even when the ETag matches.) Pieces carry a random token in their key, so
 * a frozen writer never overwrites a piece a state names; parts it uploads
 * late are caught by the ETag chain (`ph`) when the upload is completed.
 */

import { createHash } from "node:crypto";

export interface UploadedPart {
  /** S3 part number, 1-based, consecutive. */
  n: number;
  etag: string;
  size: number;
}

/**
 * A session's state. It is kept in the user metadata of an empty object, so
 * reading it is a HEAD: Ceph RGW sends small bodies ~40 ms late (Nagle
 * against delayed ACKs), which made every GET of a state or piece cost that.
 * It stays far below S3's 2 KiB metadata limit: pieces are merged when there
 * are more than MAX_PIECES, and the parts' ETags are asked of S3 (ListParts)
 * only when the upload is completed.
 */
export interface SessionState {
  v: 1;
  /** Version: this state is the object state-<seq> (0: the session as started, kept only in the hint). */
  seq: number;
  /** Bytes received so far (parts + pieces, or the staging object once sealed). */
  size: number;
  /** The multipart upload into `data`, created when the first full part is ready. */
  mpu?: string;
  /** Parts 1..np of `mpu` hold the session's first partBytes bytes; parts above np are leftovers of failed appends. */
  np: number;
  partBytes: number;
  /** SHA-256 chain over parts 1..np ("" for none): chain(prev, n, etag); checked against S3's parts before completion. */
  ph: string;
  /** The piece objects, in order, following the parts; together smaller than one part. */
  pieces: Piece[];
  /** The multipart upload was completed: the session's bytes are the `data` object. */
  sealed?: boolean;
}

export interface Piece {
  offset: number;
  size: number;
  /** Random, per write: two writers never produce the same key. */
  t: string;
}

export const MAX_PIECES = 16;
/** The user-metadata key of the state (x-amz-meta-ferry-state). */
export const STATE_METADATA_KEY = "ferry-state";
/** A random id of the write that created a state version (x-amz-meta-ferry-writer). */
export const WRITER_METADATA_KEY = "ferry-writer";

export function emptySession(): SessionState {
  return { v: 1, seq: 0, size: 0, np: 0, partBytes: 0, ph: "", pieces: [] };
}

export function encodeSessionState(state: SessionState): string {
  return JSON.stringify(state);
}

const DIGEST = /^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/;

export class S3Layout {
  readonly prefix: string;

  constructor(prefix: string) {
    // "team-a" and "team-a/" mean the same folder; "" is the bucket's root.
    this.prefix = prefix === "" || prefix.endsWith("/") ? prefix : `${prefix}/`;
  }

  blob(digest: string): string {
    if (!DIGEST.test(digest)) throw new Error(`not a digest the store keeps: ${digest.slice(0, 80)}`);
    const [algorithm, hex] = digest.split(":");
    return `${this.prefix}blobs/${algorithm}/${hex}`;
  }

  blobsPrefix(): string {
    return `${this.prefix}blobs/`;
  }

  /** The digest a blob key names, or null for keys the layout never produces. */
  digestOfKey(key: string): string | null {
    if (!key.startsWith(this.blobsPrefix())) return null;
    const [algorithm, hex, extra] = key.slice(this.blobsPrefix().length).split("/");
    if (extra !== undefined) return null;
    const digest = `${algorithm}:${hex}`;
    return DIGEST.test(digest) ? digest : null;
  }

  uploadsPrefix(): string {
    return `${this.prefix}uploads/`;
  }

  session(id: string): string {
    if (!isSessionId(id)) throw new Error("invalid upload id");
    return `${this.uploadsPrefix()}${id}/`;
  }

  /** The hint: the latest state this registry wrote (readers check for newer versions). */
  state(id: string): string {
    return `${this.session(id)}state`;
  }

  stateVersion(id: string, seq: number): string {
    return `${this.session(id)}state-${String(seq).padStart(10, "0")}`;
  }

  staging(id: string): string {
    return `${this.session(id)}data`;
  }

  /** Named by offset, size and a random token: no write ever replaces a piece a state names. */
  piece(id: string, piece: Piece): string {
    if (!/^[0-9a-f]{1,32}$/.test(piece.t)) throw new Error("invalid piece token");
    return `${this.session(id)}piece-${String(piece.offset).padStart(16, "0")}-${piece.size}-${piece.t}`;
  }

  /** The session id a key under uploads/ belongs to (null for keys no session of ours could have). */
  sessionOfKey(key: string): string | null {
    if (!key.startsWith(this.uploadsPrefix())) return null;
    const id = key.slice(this.uploadsPrefix().length).split("/")[0];
    return isSessionId(id) ? id : null;
  }

  /** A throw-away object the start-up check writes and deletes (outside blobs/ and uploads/). */
  probe(nonce: string): string {
    return `${this.prefix}probe/${nonce}`;
  }
}

/** Ids come from the upload service (UUIDs); anything that could escape its folder is refused. */
function isSessionId(id: string): boolean {
  return /^[A-Za-z0-9._-]{1,128}$/.test(id) && id !== "." && id !== "..";
}

/** Parses a state; anything else found at a state key is treated as corrupt, never guessed at. */
export function parseSessionState(text: string | undefined): SessionState {
  let value: Partial<SessionState> | null;
  try {
    value = JSON.parse(text ?? "") as Partial<SessionState> | null;
  } catch {
    throw new Error("upload session state is malformed");
  }
  if (typeof value !== "object" || value === null) throw new Error("upload session state is malformed");
  const okNumber = (n: unknown) => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
  if (
    value.v !== 1 ||
    !okNumber(value.seq) ||
    !okNumber(value.size) ||
    typeof value.ph !== "string" ||
    !okNumber(value.np) ||
    !okNumber(value.partBytes) ||
    !Array.isArray(value.pieces) ||
    (value.mpu !== undefined && typeof value.mpu !== "string") ||
    !value.pieces.every((p) => p && okNumber(p.offset) && okNumber(p.size) && typeof p.t === "string" && /^[0-9a-f]{1,32}$/.test(p.t))
  ) {
    throw new Error("upload session state is malformed");
  }
  return value as SessionState;
}

/** The next link of a state's part chain: parts are identified by number and S3's ETag (quotes dropped). */
export function chainPart(previous: string, part: { n: number; etag: string }): string {
  return createHash("sha256").update(`${previous}|${part.n}:${part.etag.replace(/"/g, "")}`).digest("hex").slice(0, 32);
}
