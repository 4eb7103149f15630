/**
 * What the registry asks of federation. The registry's use cases call these
 * hooks and know nothing of URL policy, fetching or caching.
 */
import type { Readable } from "node:stream";
import type { Extension } from "../http/app.js";
import type { Descriptor } from "../oci/manifest.js";
import type { ByteRange } from "../storage/blob-store.js";
import type { ForeignLayerMark, ForeignLayerWrite } from "../metadata/meta-store.js";

export interface AdmitRequest {
  repository: string;
  manifestDigest: string;
  /** Layers that carry `urls` and whose bytes the repository does not hold. */
  layers: Descriptor[];
  /** Anonymous users cannot read this repository. */
  isPrivate: boolean;
}

export interface AdmitResult {
  marks: ForeignLayerWrite[];
  /** Texts for `Warning: 299 - "..."` headers. */
  warnings: string[];
}

export type ForeignBlobResponse =
  | { kind: "redirect"; location: string }
  | { kind: "stream"; size: number; body: Readable; range?: ByteRange }
  /** Answer a HEAD from the mark without touching the source. */
  | { kind: "head"; size: number };

export interface ServeRequest {
  repository: string;
  mark: ForeignLayerMark;
  method: "GET" | "HEAD";
  range?: ByteRange;
}

export interface ClientGateRequest {
  repository: string;
  /** The manifest about to be served. */
  manifestDigest: string;
  headers: Record<string, string | string[] | undefined>;
}

export interface Federation {
  /** True when manifests may reference layers the registry does not hold. */
  readonly enabled: boolean;
  /** Polices the URLs of foreign layers at push time; throws a RegistryError to refuse the manifest. */
  admit(request: AdmitRequest): Promise<AdmitResult>;
  /** Answers a blob request for a foreign layer the registry does not hold; throws a RegistryError when it cannot. */
  serve(request: ServeRequest): Promise<ForeignBlobResponse>;
  /** Throws a RegistryError when a manifest with foreign layers must not be served to this client. */
  gateManifest(request: ClientGateRequest): Promise<void>;
  /** Endpoints federation serves itself (the /ferry/v1/foreign admin API). */
  readonly extensions?: Extension[];
  close(): Promise<void>;
}
