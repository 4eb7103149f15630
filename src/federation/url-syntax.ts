/**
 * The URL checks every foreign layer URL must pass, whatever the policy:
 * an absolute RFC 3986 URL with an allowed scheme, no userinfo (credentials
 * must never live in a manifest) and no fragment.
 */
export type UrlProblem = { url: string; reason: string };

export function checkUrlSyntax(url: string, schemes: readonly string[]): UrlProblem | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { url, reason: "is not an absolute URL" };
  }
  const scheme = parsed.protocol.replace(/:$/, "");
  if (!schemes.includes(scheme)) return { url, reason: `uses scheme "${scheme}"; allowed: ${schemes.join(", ")}` };
  if (parsed.username !== "" || parsed.password !== "") return { url, reason: "contains userinfo (credentials are not allowed in URLs)" };
  if (parsed.hash !== "" || url.includes("#")) return { url, reason: "contains a fragment" };
  if (parsed.hostname === "") return { url, reason: "has no host" };
  return null;
}
