/**
 * Why a login failed, as the audit log names it. The auth code tags the
 * errors it throws for a failed login here (a weak map: nothing the client
 * sees changes, and the audit log need not parse messages). Never holds a
 * password: only the reason class and the user name that was tried.
 */

export type LoginFailureReason =
  /** Wrong password or unknown user (the same to the client, on purpose). */
  | "bad-credentials"
  /** Basic credentials that do not decode, or are too long. */
  | "malformed"
  /** The failed-login limits refused to check the password at all. */
  | "rate-limited"
  /** A Bearer token that is invalid, expired or from an untrusted issuer. */
  | "token-rejected"
  /** A refresh token that is invalid, expired or revoked. */
  | "refresh-rejected";

export interface LoginFailure {
  reason: LoginFailureReason;
  /** The user name the caller tried, when it named one. */
  user: string | null;
}

const failures = new WeakMap<object, LoginFailure>();

/** Tags `error` as a failed login and returns it, for `throw loginFailed(...)`. */
export function loginFailed<E>(error: E, reason: LoginFailureReason, user: string | null = null): E {
  if (typeof error === "object" && error !== null && !failures.has(error)) failures.set(error, { reason, user });
  return error;
}

export function loginFailureOf(error: unknown): LoginFailure | undefined {
  return typeof error === "object" && error !== null ? failures.get(error) : undefined;
}
