/**
 * Docker token-auth scopes: `repository:NAME:pull,push`, `registry:catalog:*`,
 * and the resource-class form `repository(plugin):NAME:pull` (docker
 * distribution spec, "Token Scope Documentation"). The same shape is the
 * `access` claim of a token.
 */
import { RegistryError } from "../oci/errors.js";

export interface Scope {
  type: string;
  name: string;
  actions: string[];
}

export function parseScope(text: string): Scope {
  const first = text.indexOf(":");
  const last = text.lastIndexOf(":");
  if (first <= 0 || last === first) throw badScope(text);
  const type = text.slice(0, first).replace(/\(.*\)$/, "");
  const name = text.slice(first + 1, last);
  const actions = text.slice(last + 1).split(",").filter((a) => a !== "");
  if (name === "" || !/^[a-z]+$/.test(type)) throw badScope(text);
  return { type, name, actions };
}

/** All scopes of a request: repeated `scope` parameters, each possibly space-separated (OAuth2 form). */
export function parseScopes(values: readonly string[]): Scope[] {
  const scopes: Scope[] = [];
  for (const value of values) {
    for (const part of value.split(" ")) if (part !== "") scopes.push(parseScope(part));
  }
  return scopes;
}

export function formatScope(scope: Scope): string {
  return `${scope.type}:${scope.name}:${scope.actions.join(",")}`;
}

function badScope(text: string): RegistryError {
  return new RegistryError("UNAUTHORIZED", `scope "${text.slice(0, 200)}" is not of the form TYPE:NAME:ACTIONS`, {
    status: 400,
    detail: { scope: text.slice(0, 200) },
  });
}

/** Reads a token's `access` claim, ignoring malformed entries rather than trusting them. */
export function accessClaim(value: unknown): Scope[] {
  if (!Array.isArray(value)) return [];
  const out: Scope[] = [];
  for (const entry of value as unknown[]) {
    if (typeof entry !== "object" || entry === null) continue;
    const { type, name, actions } = entry as Record<string, unknown>;
    if (typeof type !== "string" || typeof name !== "string" || !Array.isArray(actions)) continue;
    out.push({ type, name, actions: actions.filter((a): a is string => typeof a === "string") });
  }
  return out;
}
