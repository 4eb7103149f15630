/**
 * Manifest and index parsing and validation (OCI image-spec 1.1 and Docker
 * image manifest v2 schema 2 / manifest list). Pure: takes bytes, returns a
 * structured view or throws MANIFEST_INVALID naming the offending field.
 * The bytes themselves are never re-serialized anywhere.
 */
import { RegistryError } from "./errors.js";
import { parseDigest } from "./digest.js";
import {
  DOCKER_FOREIGN_LAYER,
  DOCKER_SCHEMA1,
  DOCKER_SCHEMA1_SIGNED,
  MANIFEST_KIND,
  OCI_INDEX,
  OCI_MANIFEST,
  type ManifestKind,
} from "./media-types.js";

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  artifactType?: string;
  platform?: Record<string, unknown>;
}

export interface ParsedManifest {
  mediaType: string;
  kind: ManifestKind;
  config?: Descriptor;
  layers: Descriptor[];
  manifests: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
}

type Json = Record<string, unknown>;

function invalid(message: string, detail?: unknown): never {
  throw new RegistryError("MANIFEST_INVALID", message, detail === undefined ? {} : { detail });
}

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function parseStringMap(value: unknown, field: string): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  if (!isObject(value) || Object.values(value).some((v) => typeof v !== "string")) {
    invalid(`${field} must be an object of string values`, { field });
  }
  return value as Record<string, string>;
}

export function parseDescriptor(value: unknown, field: string): Descriptor {
  if (!isObject(value)) invalid(`${field} must be a descriptor object`, { field });
  const { mediaType, digest, size, urls, annotations, artifactType, platform } = value;
  if (typeof mediaType !== "string" || mediaType === "") invalid(`${field}.mediaType must be a non-empty string`, { field });
  if (typeof digest !== "string") invalid(`${field}.digest must be a string`, { field });
  try {
    parseDigest(digest);
  } catch (error) {
    invalid(`${field}.digest is invalid: ${(error as Error).message}`, { field, digest });
  }
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
    invalid(`${field}.size must be a non-negative integer`, { field });
  }
  const descriptor: Descriptor = { mediaType, digest, size };
  if (urls !== undefined) {
    if (!Array.isArray(urls) || urls.some((u) => typeof u !== "string")) invalid(`${field}.urls must be an array of strings`, { field });
    descriptor.urls = urls as string[];
  }
  const parsedAnnotations = parseStringMap(annotations, `${field}.annotations`);
  if (parsedAnnotations) descriptor.annotations = parsedAnnotations;
  if (artifactType !== undefined) {
    if (typeof artifactType !== "string") invalid(`${field}.artifactType must be a string`, { field });
    descriptor.artifactType = artifactType;
  }
  if (platform !== undefined) {
    if (!isObject(platform)) invalid(`${field}.platform must be an object`, { field });
    descriptor.platform = platform;
  }
  return descriptor;
}

function parseDescriptorList(value: unknown, field: string): Descriptor[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) invalid(`${field} must be an array of descriptors`, { field });
  return value.map((item, i) => parseDescriptor(item, `${field}[${i}]`));
}

/**
 * Works out which manifest type a PUT carries. The Content-Type header wins;
 * when present, the body's `mediaType` must agree with it (image-spec: the
 * field "MUST" match the media type used to describe the manifest).
 */
function resolveMediaType(contentType: string | undefined, body: Json): string {
  const declared = typeof body.mediaType === "string" ? body.mediaType : undefined;
  if (body.mediaType !== undefined && declared === undefined) invalid("mediaType must be a string", { field: "mediaType" });
  if (contentType === DOCKER_SCHEMA1 || contentType === DOCKER_SCHEMA1_SIGNED || body.schemaVersion === 1) {
    throw new RegistryError("MANIFEST_INVALID", "Docker image manifest schema 1 is deprecated and not accepted; push schema 2 or OCI", {
      detail: { mediaType: contentType ?? declared },
    });
  }
  const candidate = contentType && contentType in MANIFEST_KIND ? contentType : undefined;
  if (candidate && declared && declared !== candidate) {
    invalid(`the manifest's mediaType "${declared}" does not match the Content-Type "${candidate}"`, {
      contentType: candidate,
      mediaType: declared,
    });
  }
  const chosen = candidate ?? declared ?? inferMediaType(body);
  if (!(chosen in MANIFEST_KIND)) {
    throw new RegistryError("MANIFEST_INVALID", `unsupported manifest media type "${chosen}"`, {
      detail: { mediaType: chosen, supported: Object.keys(MANIFEST_KIND) },
    });
  }
  return chosen;
}

function inferMediaType(body: Json): string {
  if (Array.isArray(body.manifests)) return OCI_INDEX;
  if (body.config !== undefined) return OCI_MANIFEST;
  return invalid("cannot tell the manifest type: set Content-Type or the mediaType field");
}

/** Parses manifest bytes as pushed. `contentType` is the request's normalized Content-Type. */
export function parseManifest(bytes: Buffer, contentType: string | undefined): ParsedManifest {
  let body: unknown;
  try {
    body = JSON.parse(bytes.toString("utf8"));
  } catch (error) {
    invalid(`manifest is not valid JSON: ${(error as Error).message}`);
  }
  if (!isObject(body)) invalid("manifest must be a JSON object");
  if (body.schemaVersion !== 2) invalid("schemaVersion must be 2", { field: "schemaVersion" });
  const mediaType = resolveMediaType(contentType, body);
  const kind = MANIFEST_KIND[mediaType]!;
  const manifest: ParsedManifest = { mediaType, kind, layers: [], manifests: [] };

  if (kind === "image") {
    if (body.config === undefined) invalid("an image manifest needs a config descriptor", { field: "config" });
    manifest.config = parseDescriptor(body.config, "config");
    manifest.layers = parseDescriptorList(body.layers, "layers");
    if (body.layers === undefined) invalid("an image manifest needs a layers array", { field: "layers" });
    for (const [i, layer] of manifest.layers.entries()) {
      if (layer.mediaType === DOCKER_FOREIGN_LAYER && (layer.urls === undefined || layer.urls.length === 0)) {
        invalid(`layers[${i}] is a Docker foreign layer without urls: a foreign layer must say where it can be fetched`, {
          field: `layers[${i}].urls`,
          digest: layer.digest,
        });
      }
    }
  } else {
    if (body.manifests === undefined) invalid("an index needs a manifests array", { field: "manifests" });
    manifest.manifests = parseDescriptorList(body.manifests, "manifests");
  }

  if (body.subject !== undefined) manifest.subject = parseDescriptor(body.subject, "subject");
  if (body.artifactType !== undefined) {
    if (typeof body.artifactType !== "string") invalid("artifactType must be a string", { field: "artifactType" });
    manifest.artifactType = body.artifactType;
  }
  const annotations = parseStringMap(body.annotations, "annotations");
  if (annotations) manifest.annotations = annotations;
  return manifest;
}

/**
 * The artifact type a referrers response reports for a manifest
 * (distribution-spec 1.1 "Listing Referrers"): `artifactType`, else the
 * config's media type for image manifests.
 */
export function effectiveArtifactType(manifest: ParsedManifest): string | undefined {
  return manifest.artifactType ?? (manifest.kind === "image" ? manifest.config?.mediaType : undefined);
}
