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

export const CLIENT_SUPPORT_HEADER_LINE = "Ferry-Foreign-Layers: supported";

/**
 * 406 for a client that did not declare foreign-layer support
 * (`requireClientSupport`). The message says what is true for the serve
 * mode in force for each layer: not served, redirected, or proxied.
 */
export function clientSupportRequired(manifestDigest: string, modes: Array<"error" | "redirect" | "proxy" | null>): RegistryError {
  const count = (mode: (typeof modes)[number]) => modes.filter((m) => m === mode).length;
  const parts: string[] = [];
  const notServed = count("error") + count(null);
  if (notServed > 0) parts.push(`${notServed} this registry does not serve (the client must fetch them from their URLs)`);
  if (count("redirect") > 0) parts.push(`${count("redirect")} this registry answers with a redirect to the layer's URL`);
  if (count("proxy") > 0) parts.push(`${count("proxy")} this registry serves by fetching them from their URLs and verifying them`);
  return new RegistryError(
    "UNSUPPORTED",
    `this image has ${modes.length} foreign layer(s) that live outside this registry: ${parts.join("; ")}. ` +
      `This registry only gives such images to clients that declare they understand foreign layers ` +
      `(request header "${CLIENT_SUPPORT_HEADER_LINE}"). Use a client that does (e.g. ferry pull, or upgrade your client)`,
    {
      status: 406,
      detail: {
        manifest: manifestDigest,
        foreignLayers: modes.length,
        serve: { error: notServed, redirect: count("redirect"), proxy: count("proxy") },
        requiredHeader: CLIENT_SUPPORT_HEADER_LINE,
      },
    },
  );
}
