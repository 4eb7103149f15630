/** What a handler gets: the request, the response, the caller and the use cases. */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Readable } from "node:stream";
import type { Logger } from "pino";
import type { Principal, AccessController } from "../auth/access.js";
import type { BlobService } from "../registry/blobs.js";
import type { UploadService } from "../registry/uploads.js";
import type { ManifestService } from "../registry/manifests.js";
import type { ListingService } from "../registry/listing.js";
import type { Federation } from "../federation/federation.js";
import type { BlobStore } from "../storage/blob-store.js";
import type { EventSink } from "../notifications/events.js";
import type { MirrorService } from "../mirrors/service.js";

export interface Services {
  blobs: BlobService;
  uploads: UploadService;
  manifests: ManifestService;
  listing: ListingService;
  federation: Federation;
  access: AccessController;
  blobStore: BlobStore;
  logger: Logger;
  manifestMaxBytes: number;
  /**
   * How large local blobs are sent when the native addon is built (storage.blobTransfer): "copy" or
   * "sendfile" on the addon's thread, "stream" (or absent) through Node.
   */
  blobTransfer?: "copy" | "sendfile" | "stream";
  /** Webhook events (src/notifications/); absent or a no-op sink when none are configured. */
  events?: EventSink;
  /** Pull-through mirrors (src/mirrors/); absent when none are configured. */
  mirrors?: MirrorService;
}

export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  path: string;
  query: URLSearchParams;
  principal: Principal;
  services: Services;
  requestId: string;
  /**
   * The client's address, resolved once per request: the socket peer, or the
   * X-Forwarded-For hop a trusted proxy vouches for (config `trustedProxies`).
   * Use this, never `req.socket.remoteAddress`.
   */
  clientAddress: string;
  /**
   * The request body to read instead of `req`: it always ends or errors, also
   * when the client hung up before the handler started reading, or went quiet
   * for longer than `http.requestIdleTimeout` (then with a 408 error).
   */
  body: Readable;
  /**
   * Facts a handler learned that only the audit log needs (src/audit): the
   * digest a pushed tag pointed at before, the user a token was issued to.
   */
  audit?: AuditFacts;
}

export interface AuditFacts {
  /** Manifest PUT: the digest of what was stored. */
  digest?: string;
  /** Manifest PUT by tag: the digest the tag named before the push (null: the tag is new). */
  previousDigest?: string | null;
  /** /token: the user the token was issued to (null: anonymous), and how they proved it. */
  tokenUser?: string | null;
  grant?: "basic" | "password" | "refresh_token" | "anonymous";
}
