// The UI's only way to the registry: the documented endpoints (docs/ui.md).
// The access token and refresh token live in sessionStorage (gone with the
// tab), are sent only to this origin, and are never logged.

// The answers' shapes are the server's own (src/browse/wire.ts), imported
// for their types only: nothing of the server reaches the bundle.
import type { GcState, ImageResponse, RepositoryPage, RepositoryView, Session, SourceRow } from "../../src/browse/wire";

export type {
  ChildNode,
  ConfigView,
  ForeignSourceState as SourceState,
  GcState,
  ImageNode,
  ImageResponse as ImageView,
  LayerView,
  RepositoryPage,
  RepositorySummary,
  RepositoryView,
  Session,
  SourceRow,
  TagRow,
} from "../../src/browse/wire";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

const CLIENT_ID = "ferry-ui";
const KEY = { token: "ferry.token", refresh: "ferry.refresh" };

function stored(key: string): string | null {
  try {
    return sessionStorage.getItem(key);
  } catch {
    return null;
  }
}

function store(key: string, value: string | null): void {
  try {
    if (value === null) sessionStorage.removeItem(key);
    else sessionStorage.setItem(key, value);
  } catch {
    // storage disabled: the session lasts as long as the page
  }
}

let accessToken: string | null = stored(KEY.token);
let refreshToken: string | null = stored(KEY.refresh);

export function signedIn(): boolean {
  return accessToken !== null;
}

async function errorOf(response: Response): Promise<ApiError> {
  let message = `${response.status} ${response.statusText}`;
  let code: string | undefined;
  try {
    const body = (await response.json()) as { errors?: Array<{ code: string; message: string }> };
    if (body.errors?.[0]) {
      message = body.errors[0].message;
      code = body.errors[0].code;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message, code);
}

async function tokenRequest(form: Record<string, string>): Promise<{ access_token: string; refresh_token?: string }> {
  const response = await fetch("/token", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ client_id: CLIENT_ID, ...form }).toString(),
    credentials: "omit",
  });
  if (!response.ok) throw await errorOf(response);
  return (await response.json()) as { access_token: string; refresh_token?: string };
}

export async function signIn(username: string, password: string): Promise<void> {
  const body = await tokenRequest({ grant_type: "password", username, password, access_type: "offline", scope: "registry:catalog:*" });
  accessToken = body.access_token;
  refreshToken = body.refresh_token ?? null;
  store(KEY.token, accessToken);
  store(KEY.refresh, refreshToken);
}

export function signOut(): void {
  accessToken = null;
  refreshToken = null;
  store(KEY.token, null);
  store(KEY.refresh, null);
}

/** A token for `scope` (e.g. repository:NAME:delete), from the refresh token; null when not signed in. */
async function scopedToken(scope: string): Promise<string | null> {
  if (!refreshToken) return null;
  const body = await tokenRequest({ grant_type: "refresh_token", refresh_token: refreshToken, scope });
  return body.access_token;
}

/** Renews the session's access token once it expired; false when that is impossible. */
async function renew(): Promise<boolean> {
  if (!refreshToken) return false;
  try {
    const token = await scopedToken("registry:catalog:*");
    if (!token) return false;
    accessToken = token;
    store(KEY.token, token);
    return true;
  } catch {
    signOut();
    return false;
  }
}

async function call(method: string, path: string, token: string | null = accessToken): Promise<Response> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  return fetch(path, { method, headers, credentials: "omit" });
}

/** A /ferry/v1 request with the session's token, renewed once when it expired. */
async function api<T>(method: string, path: string): Promise<T> {
  let response = await call(method, path);
  if (response.status === 401 && accessToken !== null && (await renew())) response = await call(method, path);
  if (response.status === 401 && accessToken !== null && !refreshToken) signOut();
  if (!response.ok) throw await errorOf(response);
  return (await response.json()) as T;
}

const q = (params: Record<string, string | undefined>) =>
  new URLSearchParams(Object.entries(params).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== "")).toString();

export const getSession = () => api<Session>("GET", "/ferry/v1/session");

/** The first page of repositories, asked for at start-up alongside the session (the page most visits open). */
let firstPage: Promise<RepositoryPage> | null = null;

export function prefetchRepositories(): void {
  firstPage = api<RepositoryPage>("GET", `/ferry/v1/repositories?${q({ n: "50" })}`);
  firstPage.catch(() => undefined); // a failure shows when the view asks again
}

export function listRepositories(search: string, last?: string, n = 50): Promise<RepositoryPage> {
  const prefetched = firstPage;
  firstPage = null;
  if (prefetched && search === "" && last === undefined && n === 50) {
    return prefetched.catch(() => api<RepositoryPage>("GET", `/ferry/v1/repositories?${q({ n: "50" })}`));
  }
  return api<RepositoryPage>("GET", `/ferry/v1/repositories?${q({ q: search, last, n: String(n) })}`);
}
export const getRepository = (name: string) => api<RepositoryView>("GET", `/ferry/v1/repository?${q({ name })}`);
export const getImage = (repository: string, reference: string) => api<ImageResponse>("GET", `/ferry/v1/image?${q({ repository, reference })}`);
export const listSources = () => api<{ sources: SourceRow[] }>("GET", "/ferry/v1/foreign/sources");
export const verifyImage = (repository: string, reference: string) =>
  api<{ ok: boolean }>("POST", `/ferry/v1/foreign/verify?${q({ repository, reference, mode: "head" })}`);
export const getGc = () => api<GcState>("GET", "/ferry/v1/gc");
export const runGc = () => api<GcState>("POST", "/ferry/v1/gc");

/** Deletes a tag or a manifest through the distribution API, with a token scoped to this one repository. */
export async function deleteReference(repository: string, reference: string, session: Session): Promise<void> {
  let token: string | null = null;
  if (session.authRequired) {
    token = await scopedToken(`repository:${repository}:delete`);
    if (!token) throw new ApiError(401, "sign in again to delete (the session has no refresh token)");
  }
  // Repository names, tags and digests use only characters a URL path carries as they are.
  const path = `/v2/${repository}/manifests/${reference}`;
  const response = await call("DELETE", path, token);
  if (!response.ok) throw await errorOf(response);
}
