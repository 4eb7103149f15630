/** The errors federation answers with when it will not admit or serve a foreign layer. */
import { RegistryError } from "../oci/errors.js";
import type { AdmitRequest, ServeRequest } from "./federation.js";

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
