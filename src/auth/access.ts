/**
 * Access control as the HTTP layer sees it. Deny-by-default policies live in
 * implementations; OpenAccess (no `auth` config) lets everyone do everything.
 */
import type { IncomingHttpHeaders } from "node:http";
import type { Extension } from "../http/app.js";

export type RepositoryAction = "pull" | "push" | "delete";

export type AccessRequest =
  | { type: "repository"; name: string; actions: RepositoryAction[] }
  | { type: "registry"; name: "catalog"; actions: ["*"] }
  | { type: "admin" };

export interface Principal {
  /** Null for anonymous callers. */
  user: string | null;
  /** How the caller authenticated; absent when it sent no credentials at all. */
  via?: "basic" | "token";
  /** Token callers: what the token grants (`access` claim); authoritative for authorize(). */
  grants?: Array<{ type: string; name: string; actions: string[] }>;
  /** Token callers: whether this registry issued the token (so its subject is one of our users). */
  localToken?: boolean;
  /** Token endpoint to name in this caller's 401 challenges (configured, or derived from its Host). */
  realm?: string;
}

export interface AccessController {
  /** True when no rule restricts anyone (logged loudly on public interfaces). */
  readonly open: boolean;
  /** Identifies the caller; throws RegistryError UNAUTHORIZED for bad credentials. */
  authenticate(headers: IncomingHttpHeaders, remoteAddress: string): Promise<Principal>;
  /** Throws RegistryError UNAUTHORIZED (with a challenge) or DENIED unless every access is granted. */
  authorize(principal: Principal, access: AccessRequest[]): Promise<void>;
  /** Whether the caller may do `action` on `repository` (mount sources, catalog filtering). */
  can(principal: Principal, repository: string, action: RepositoryAction): boolean;
  /** Whether anonymous users may pull `repository` (federation's notion of "private"). */
  isAnonymousReadable(repository: string): boolean;
  /** Endpoints the access controller serves itself (e.g. /token). */
  readonly extensions?: Extension[];
  /** Releases what the controller holds open (the shared failed-login log). */
  close?(): Promise<void>;
}

export const ANONYMOUS: Principal = { user: null };

export class OpenAccess implements AccessController {
  readonly open = true;
  async authenticate(): Promise<Principal> {
    return ANONYMOUS;
  }
  async authorize(): Promise<void> {}
  can(): boolean {
    return true;
  }
  isAnonymousReadable(): boolean {
    return true;
  }
}
