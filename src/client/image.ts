/**
 * Where images come from and go to. A copy walks a source's manifests and
 * moves blobs into a destination; registries, OCI image layouts and
 * docker-archive tarballs each implement both sides.
 */
import type { Readable } from "node:stream";
import type { Descriptor } from "../oci/manifest.js";
import type { ManifestData } from "./registry.js";

export type { ManifestData };

/** One place a blob's bytes can be read from (tried in order). */
export interface BlobCandidate {
  /** What the user sees in errors: a URL, "registry host/repo", "layout DIR". */
  name: string;
  open(): Promise<Readable>;
  /**
   * A local copy that may legitimately be absent (a layout holding only a
   * foreign layer's descriptor): its ENOENT is not reported unless every
   * other candidate fails too.
   */
  quietWhenMissing?: boolean;
}

export interface RegistryLocation {
  registry: string;
  repository: string;
}

export interface ImageSource {
  readonly name: string;
  /** Set for registry sources: lets a destination on the same registry mount blobs. */
  readonly location?: RegistryLocation;
  rootManifest(): Promise<ManifestData>;
  /** A manifest an index refers to. */
  manifest(descriptor: Descriptor): Promise<ManifestData>;
  /** Where a blob can be read, in the order to try. */
  blobCandidates(descriptor: Descriptor): BlobCandidate[];
  close(): Promise<void>;
}

export interface ImageDestination {
  readonly name: string;
  /** Checks the destination before anything is read or sent (a registry: that GET /v2/ is a registry). */
  prepare?(): Promise<void>;
  /** Registries keep foreign layers as references; layouts and archives store their bytes. */
  readonly storesForeignBytes: boolean;
  /** An archive holds one image, not an index. */
  readonly singleImage: boolean;
  hasBlob(descriptor: Descriptor): Promise<boolean>;
  /** Cross-repository mount; true when the blob is now in the destination. */
  mountBlob?(descriptor: Descriptor, from: RegistryLocation): Promise<boolean>;
  /**
   * Stores a blob from a stream the caller already verifies (a VerifyingStream
   * for the descriptor); must commit nothing if the stream fails.
   */
  putBlob(descriptor: Descriptor, stream: Readable, onProgress: (bytes: number) => void, options?: PutBlobOptions): Promise<void>;
  /** Stores a manifest; `root` is the one the destination's tag names. */
  putManifest(manifest: ManifestData, root: boolean): Promise<void>;
  /** Finishes the destination (index.json, the tarball). */
  commit(): Promise<void>;
  /** Discards anything half-written. */
  abort(): Promise<void>;
}

export interface PutBlobOptions {
  /** An earlier attempt failed: prefer a transfer that can resume after an interruption. */
  retry?: boolean;
}

export type BlobOutcome = "copied" | "exists" | "mounted" | "foreign-skipped";

export type ProgressEvent =
  | { type: "blob-start"; digest: string; size: number; mediaType: string }
  | { type: "blob-progress"; digest: string; bytes: number; size: number }
  | { type: "blob-done"; digest: string; size: number; outcome: BlobOutcome; source?: string }
  | { type: "source-failed"; digest: string; source: string; error: string }
  | { type: "manifest"; digest: string; mediaType: string; root: boolean }
  | { type: "notice"; message: string }
  | { type: "warning"; registry: string; message: string };

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export function parsePlatform(value: string): Platform {
  const parts = value.split("/");
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === "")) {
    throw new Error(`--platform "${value}" must be os/arch or os/arch/variant (e.g. linux/arm64/v8)`);
  }
  const platform: Platform = { os: parts[0]!, architecture: parts[1]! };
  if (parts[2]) platform.variant = parts[2];
  return platform;
}

export function formatPlatform(platform: Record<string, unknown> | Platform | undefined): string {
  if (!platform) return "unknown";
  const p = platform as Record<string, unknown>;
  return [p.os, p.architecture, p.variant].filter((v) => typeof v === "string" && v !== "").join("/");
}

export function platformMatches(wanted: Platform, descriptor: Descriptor): boolean {
  const p = descriptor.platform as Record<string, unknown> | undefined;
  if (!p) return false;
  if (p.os !== wanted.os || p.architecture !== wanted.architecture) return false;
  return wanted.variant === undefined || p.variant === wanted.variant;
}

/** The platform of this machine, in OCI terms. */
export function hostPlatform(): Platform {
  const arch: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x" };
  return { os: process.platform === "win32" ? "windows" : "linux", architecture: arch[process.arch] ?? process.arch };
}
