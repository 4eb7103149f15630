/**
 * Where an image is, as the CLI takes it: `oci:DIR[:TAG]`,
 * `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:NAME:TAG]` or a registry
 * reference `[docker://]host[:port]/repository[:tag][@digest]`.
 *
 * A word followed by `:` that is not a registry host with a port is a
 * transport prefix; an unknown one is an error listing the supported ones,
 * never a host name (`dir:/tmp/x` must not become `https://dir/v2/tmp/x`,
 * where a search domain could resolve `dir` to someone's registry).
 */
import { parseImageReference, type ImageReference } from "../oci/image-reference.js";
import { isValidTag } from "../oci/reference.js";
import { UsageError } from "./errors.js";

export type ImageLocation =
  | { kind: "oci"; dir: string; tag?: string }
  | { kind: "oci-archive"; file: string; tag?: string }
  | { kind: "docker-archive"; file: string; tag?: string }
  | { kind: "registry"; ref: ImageReference };

export const SUPPORTED_TRANSPORTS = "docker://HOST/REPO[:TAG] (or HOST/REPO[:TAG]), oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG]";

/** skopeo's transports Ferry does not implement, named so the error can say so. */
const OTHER_TRANSPORTS = new Set(["dir", "docker-daemon", "containers-storage", "ostree", "sif", "tarball"]);

/** `word:` where word cannot be a registry host (no `.`, not `localhost`) and no port follows. */
function transportPrefix(value: string): string | undefined {
  const match = /^([A-Za-z][A-Za-z0-9+_-]*):/.exec(value);
  if (!match) return undefined;
  const word = match[1]!;
  if (word === "localhost") return undefined;
  const rest = value.slice(match[0].length);
  // host:port/repo: a port (digits) up to the first slash.
  if (/^\d+(\/|$)/.test(rest)) return undefined;
  return word;
}

function unknownTransport(value: string, word: string): never {
  const known = OTHER_TRANSPORTS.has(word.toLowerCase()) ? ` (a skopeo transport Ferry does not implement)` : "";
  throw new UsageError(`unknown transport "${word}:" in "${value}"${known}; supported: ${SUPPORTED_TRANSPORTS}`);
}

export function parseLocation(value: string): ImageLocation {
  if (value.startsWith("docker://")) return { kind: "registry", ref: parseRegistryReference(value) };
  const word = transportPrefix(value);
  if (word === undefined) return { kind: "registry", ref: parseRegistryReference(value) };
  const rest = value.slice(word.length + 1);
  switch (word) {
    case "oci": {
      const { path, tag } = splitTag(rest);
      if (path === "") throw new UsageError(`"${value}": oci: needs a directory (oci:DIR[:TAG])`);
      return tag ? { kind: "oci", dir: path, tag } : { kind: "oci", dir: path };
    }
    case "oci-archive": {
      const { path, tag } = splitTag(rest);
      if (path === "") throw new UsageError(`"${value}": oci-archive: needs a file (oci-archive:FILE[:TAG])`);
      return tag ? { kind: "oci-archive", file: path, tag } : { kind: "oci-archive", file: path };
    }
    case "docker-archive": {
      // FILE or FILE:name:tag (skopeo's syntax).
      const first = rest.indexOf(":");
      if (first === 0 || rest === "") throw new UsageError(`"${value}": docker-archive: needs a file (docker-archive:FILE[:NAME:TAG])`);
      if (first > 0) return { kind: "docker-archive", file: rest.slice(0, first), tag: rest.slice(first + 1) };
      return { kind: "docker-archive", file: rest };
    }
    case "docker":
      throw new UsageError(`"${value}": the registry transport is written docker://HOST/REPO (two slashes)`);
    default:
      return unknownTransport(value, word);
  }
}

function splitTag(value: string): { path: string; tag?: string } {
  const colon = value.lastIndexOf(":");
  if (colon > 0 && !value.slice(colon + 1).includes("/") && isValidTag(value.slice(colon + 1))) {
    return { path: value.slice(0, colon), tag: value.slice(colon + 1) };
  }
  return { path: value };
}

/** Checks `host[:port]` the way a person would want: an empty or non-numeric port is named as such. */
export function checkRegistryHost(host: string, whole = host): string {
  if (host === "") throw new UsageError(`"${whole}": no registry host`);
  let name = host;
  let port: string | undefined;
  if (host.startsWith("[")) {
    const close = host.indexOf("]");
    if (close < 0) throw new UsageError(`"${whole}": unterminated IPv6 address in the registry host`);
    name = host.slice(0, close + 1);
    const after = host.slice(close + 1);
    if (after !== "") {
      if (!after.startsWith(":")) throw new UsageError(`"${whole}": unexpected "${after}" after the IPv6 address`);
      port = after.slice(1);
    }
  } else {
    const colon = host.indexOf(":");
    if (colon >= 0) {
      name = host.slice(0, colon);
      port = host.slice(colon + 1);
    }
    if (!/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(name)) {
      throw new UsageError(`"${whole}": "${name}" is not a valid registry host name`);
    }
  }
  if (port !== undefined) {
    if (port === "") throw new UsageError(`"${whole}": the registry host "${host}" has an empty port (write ${name}:PORT, e.g. ${name}:5000)`);
    if (!/^\d+$/.test(port)) throw new UsageError(`"${whole}": the port "${port}" of the registry host is not a number`);
    const number = Number(port);
    if (number < 1 || number > 65535) throw new UsageError(`"${whole}": port ${port} is out of range (1-65535)`);
  }
  return host;
}

/** A registry image reference, `docker://` accepted; any other transport is a usage error. */
export function parseRegistryReference(value: string): ImageReference {
  const bare = value.startsWith("docker://") ? value.slice("docker://".length) : value;
  const word = value.startsWith("docker://") ? undefined : transportPrefix(value);
  if (word !== undefined) {
    if (["oci", "oci-archive", "docker-archive"].includes(word)) {
      throw new UsageError(`"${value}": this command works on a registry image (HOST/REPO[:TAG]), not on ${word}:`);
    }
    unknownTransport(value, word);
  }
  const slash = bare.indexOf("/");
  const first = slash < 0 ? bare : bare.slice(0, slash);
  // Check the host part first: "127.0.0.1:/app" must not read as a repository.
  if (slash > 0 && (first.includes(".") || first.includes(":") || first === "localhost" || first.startsWith("["))) checkRegistryHost(first, value);
  try {
    return parseImageReference(bare);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** A repository (`HOST/REPO`, no tag or digest), `docker://` accepted. */
export function parseRepository(value: string): ImageReference {
  const ref = parseRegistryReference(value);
  if (ref.tag !== undefined || ref.digest !== undefined) throw new UsageError(`"${value}": a repository takes no tag or digest`);
  return ref;
}

/** A registry host for login, logout and catalog: `host[:port]`, `docker://` or a trailing slash tolerated. */
export function parseRegistryHost(value: string): string {
  let host = value.startsWith("docker://") ? value.slice("docker://".length) : value;
  if (/^https?:\/\//.test(host)) host = host.replace(/^https?:\/\//, "");
  host = host.replace(/\/+$/, "");
  if (host.includes("/")) throw new UsageError(`"${value}": expected a registry host (host[:port]), not a repository`);
  return checkRegistryHost(host, value);
}
