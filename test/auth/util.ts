/** Helpers for the access-control tests: credentials, tokens and authenticated pushes over real HTTP. */
import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import { sha256, type TestImage } from "../helpers/images.js";

/** Cost 4 keeps tests fast; the registry accepts any bcrypt cost. */
export function bcryptHash(password: string): string {
  return bcrypt.hashSync(password, 4);
}

export function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}

export interface TokenResponse {
  token: string;
  access_token: string;
  expires_in: number;
  issued_at: string;
  refresh_token?: string;
  scope?: string;
}

/** GET /token as a client would after a challenge; `authorization` null for an anonymous token. */
export async function fetchToken(url: string, authorization: string | null, scopes: string[], extra = ""): Promise<TokenResponse> {
  const query = ["service=ferry", ...scopes.map((s) => `scope=${encodeURIComponent(s)}`)].join("&");
  const response = await fetch(`${url}/token?${query}${extra}`, { headers: authorization ? { authorization } : {} });
  assert.equal(response.status, 200, `token request failed: ${response.status} ${await response.clone().text()}`);
  return (await response.json()) as TokenResponse;
}

export function bearer(token: string): string {
  return `Bearer ${token}`;
}

/** Decodes a JWT payload without verifying it (to look at the claims the server wrote). */
export function claims(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString("utf8")) as Record<string, unknown>;
}

export async function errorCode(response: Response): Promise<string | undefined> {
  const body = (await response.json()) as { errors?: Array<{ code: string }> };
  return body.errors?.[0]?.code;
}

export async function pushBlobAs(url: string, repository: string, bytes: Buffer, authorization: string | null): Promise<Response> {
  return fetch(`${url}/v2/${repository}/blobs/uploads/?digest=${sha256(bytes)}`, {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream", ...(authorization ? { authorization } : {}) },
    body: new Uint8Array(bytes),
  });
}

export async function putManifestAs(url: string, repository: string, reference: string, mediaType: string, body: Buffer, authorization: string | null): Promise<Response> {
  return fetch(`${url}/v2/${repository}/manifests/${reference}`, {
    method: "PUT",
    headers: { "Content-Type": mediaType, ...(authorization ? { authorization } : {}) },
    body: new Uint8Array(body),
  });
}

export async function pushImageAs(url: string, repository: string, tag: string, image: TestImage, authorization: string): Promise<void> {
  for (const blob of [image.config, ...image.layers]) {
    const response = await pushBlobAs(url, repository, blob.bytes, authorization);
    assert.equal(response.status, 201, `blob push to ${repository}: ${response.status} ${await response.text()}`);
  }
  const response = await putManifestAs(url, repository, tag, image.mediaType, image.manifest, authorization);
  assert.equal(response.status, 201, `manifest push to ${repository}: ${response.status} ${await response.text()}`);
}
