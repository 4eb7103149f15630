/**
 * The spec baseline of federation (FEDERATION.md §4.3), always available:
 * foreign layers are accepted when their URLs are syntactically acceptable,
 * nothing is fetched, and a blob request answers BLOB_UNKNOWN naming the URLs.
 */
import { RegistryError } from "../oci/errors.js";
import type { AdmitRequest, AdmitResult, Federation, ForeignBlobResponse, ServeRequest } from "./federation.js";
import { checkUrlSyntax } from "./url-syntax.js";

export interface BaselineOptions {
  enabled: boolean;
  schemes: readonly string[];
}

export class BaselineFederation implements Federation {
  constructor(private readonly options: BaselineOptions) {}

  get enabled(): boolean {
    return this.options.enabled;
  }

  async admit(request: AdmitRequest): Promise<AdmitResult> {
    if (!this.options.enabled) throw federationDisabled(request);
    for (const layer of request.layers) {
      for (const url of layer.urls ?? []) {
        const problem = checkUrlSyntax(url, this.options.schemes);
        if (problem) {
          throw new RegistryError("MANIFEST_INVALID", `foreign layer ${layer.digest}: URL ${url} ${problem.reason}`, {
            detail: { digest: layer.digest, url, rule: "syntax", reason: problem.reason },
          });
        }
      }
    }
    return {
      marks: request.layers.map((layer) => ({
        digest: layer.digest,
        mediaType: layer.mediaType,
        size: layer.size,
        urls: layer.urls ?? [],
        verification: "unverified",
        verifiedAt: null,
        verificationDetail: null,
      })),
      warnings: [],
    };
  }

  async serve(request: ServeRequest): Promise<ForeignBlobResponse> {
    throw foreignLayerNotServed(request);
  }

  async gateManifest(): Promise<void> {}

  async close(): Promise<void> {}
}

export function federationDisabled(request: AdmitRequest): RegistryError {
  const [first, ...rest] = request.layers.map(
    (layer) =>
      ({
        code: "MANIFEST_BLOB_UNKNOWN",
        message: `blob ${layer.digest} is not in the repository, and foreign layers are refused because federation is turned off on this registry`,
        detail: { digest: layer.digest, urls: layer.urls ?? [], federation: "disabled" },
      }) as const,
  );
  return new RegistryError("MANIFEST_BLOB_UNKNOWN", first!.message, { detail: first!.detail, more: rest });
}

export function foreignLayerNotServed(request: ServeRequest): RegistryError {
  const { mark } = request;
  return new RegistryError(
    "BLOB_UNKNOWN",
    `blob ${mark.digest} is a foreign layer: this registry does not hold or serve its bytes. ` +
      `Fetch it from ${mark.urls.join(", ")} (clients that understand foreign layers do this themselves; upgrade the client if it does not)`,
    { detail: { digest: mark.digest, foreign: true, mediaType: mark.mediaType, size: mark.size, urls: mark.urls } },
  );
}
