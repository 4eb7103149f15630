/**
 * Token verification (Docker token auth spec): signature, aud, iss, exp/nbf
 * with clock skew, no `none`, no HS256-with-the-public-key confusion;
 * refresh tokens (GET offline_token and the OAuth2 POST form); tokens from
 * external issuers via PEM key, certificate, JWKS file and JWKS URL.
 */
import Database from "better-sqlite3";
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { generateKeyPairSync, createPublicKey, randomBytes, type KeyObject } from "node:crypto";
import { readFile, writeFile, mkdtemp } from "node:fs/promises";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { SignJWT, UnsecuredJWT, type JWTPayload } from "jose";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { buildImage, type TestImage } from "../helpers/images.js";
import { hasTool } from "../helpers/tools.js";
import { updateHtpasswd } from "../../src/auth/htpasswd.js";
import { basic, bcryptHash, bearer, claims, errorCode, fetchToken, pushBlobAs, pushImageAs } from "./util.js";

let registry: TestRegistry;
let image: TestImage;
let ourKey: KeyObject;
let foreignKey: ReturnType<typeof generateKeyPairSync>;
let jwksKey: ReturnType<typeof generateKeyPairSync>;
let jwksUrlKey: ReturnType<typeof generateKeyPairSync>;
let certKey: KeyObject | null = null;
let jwksServer: Server;
let htpasswd: string;
let dir: string;

const REPO = "team/app";

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ferry-tokens-"));
  foreignKey = generateKeyPairSync("rsa", { modulusLength: 2048 });
  jwksKey = generateKeyPairSync("ec", { namedCurve: "P-256" });
  jwksUrlKey = generateKeyPairSync("ec", { namedCurve: "P-256" });
  await writeFile(join(dir, "foreign.pem"), foreignKey.publicKey.export({ format: "pem", type: "spki" }) as string);
  await writeFile(join(dir, "keys.jwks"), JSON.stringify({ keys: [{ ...(jwksKey.publicKey.export({ format: "jwk" }) as object), kid: "file-1", alg: "ES256" }] }));
  jwksServer = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ keys: [{ ...(jwksUrlKey.publicKey.export({ format: "jwk" }) as object), kid: "url-1", alg: "ES256" }] }));
  });
  await new Promise<void>((resolve) => jwksServer.listen(0, "127.0.0.1", resolve));
  const trust: Array<Record<string, string>> = [
    { issuer: "corp-auth", publicKey: join(dir, "foreign.pem") },
    { issuer: "jwks-file-auth", jwks: join(dir, "keys.jwks"), audience: "registry.example" },
    { issuer: "jwks-url-auth", jwksUrl: `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json` },
  ];
  if (hasTool("openssl")) {
    // distribution's `rootcertbundle` style: a certificate, not a bare key.
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", join(dir, "cert.key"), "-out", join(dir, "cert.pem"), "-days", "2", "-subj", "/CN=token-signer"], { stdio: "ignore" });
    certKey = (await import("node:crypto")).createPrivateKey(await readFile(join(dir, "cert.key")));
    trust.push({ issuer: "cert-auth", publicKey: join(dir, "cert.pem") });
  }
  htpasswd = join(dir, "htpasswd");
  await writeFile(htpasswd, `alice:${bcryptHash("alice-pw")}\nadmin:${bcryptHash("admin-pw")}\n`);
  registry = await startTestRegistry({
    auth: {
      htpasswd,
      rules: [{ repositories: ["team/**"], users: ["alice"], actions: ["pull", "push"] }],
      admins: { users: ["admin"] },
      token: { trust },
    },
  });
  ourKey = (await import("node:crypto")).createPrivateKey(storedSigningKey(registry.dataDir));
  image = await buildImage({ layers: [{ "a.txt": "tokens\n" }] });
  await pushImageAs(registry.url, REPO, "v1", image, basic("admin", "admin-pw"));
});

after(async () => {
  await registry?.close();
  jwksServer?.close();
});

const now = () => Math.floor(Date.now() / 1000);
const PULL = [{ type: "repository", name: REPO, actions: ["pull"] }];

async function sign(key: KeyObject, alg: string, payload: JWTPayload, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg, ...header }).sign(key);
}

function ours(overrides: JWTPayload = {}): JWTPayload {
  return { iss: "ferry", aud: "ferry", sub: "alice", iat: now(), nbf: now(), exp: now() + 300, access: PULL, ...overrides };
}

async function pullWith(token: string): Promise<Response> {
  return fetch(`${registry.url}/v2/${REPO}/manifests/v1`, { headers: { authorization: bearer(token), accept: image.mediaType } });
}

async function assertRejected(token: string, reason: RegExp, what: string): Promise<void> {
  const response = await pullWith(token);
  assert.equal(response.status, 401, what);
  const challenge = response.headers.get("www-authenticate") ?? "";
  assert.match(challenge, /^Bearer realm=".*\/token",service="ferry",error="invalid_token"$/, what);
  const body = (await response.json()) as { errors: Array<{ code: string; message: string }> };
  assert.equal(body.errors[0]!.code, "UNAUTHORIZED", what);
  assert.match(body.errors[0]!.message, reason, what);
  assert.doesNotMatch(JSON.stringify(body), new RegExp(token.slice(-20).replace(/[-_]/g, ".")), "the token is not echoed");
}

test("a token signed with the registry's key, with the right claims, is accepted", async () => {
  assert.equal((await pullWith(await sign(ourKey, "ES256", ours()))).status, 200);
});

test("expired tokens are refused beyond the clock skew and accepted within it", async () => {
  await assertRejected(await sign(ourKey, "ES256", ours({ iat: now() - 600, nbf: now() - 600, exp: now() - 120 })), /expired/, "expired 2 min ago");
  assert.equal((await pullWith(await sign(ourKey, "ES256", ours({ exp: now() - 20 })))).status, 200, "20 s late is within the 60 s skew");
  await assertRejected(await sign(ourKey, "ES256", ours({ nbf: now() + 300 })), /not valid yet/, "nbf 5 min ahead");
  assert.equal((await pullWith(await sign(ourKey, "ES256", ours({ nbf: now() + 20 })))).status, 200, "nbf 20 s ahead is within the skew");
  await assertRejected(await sign(ourKey, "ES256", ours({ exp: undefined })), /exp/, "no exp at all");
});

test("wrong audience, unknown issuer, foreign signature, tampering, alg none and HS256 confusion are refused", async () => {
  await assertRejected(await sign(ourKey, "ES256", ours({ aud: "someone-else" })), /aud/, "wrong aud");
  await assertRejected(await sign(ourKey, "ES256", ours({ iss: "evil" })), /issuer/, "unknown iss");
  const stranger = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
  await assertRejected(await sign(stranger, "ES256", ours()), /signature/, "signed by another key");

  const good = await sign(ourKey, "ES256", ours());
  const [h, , s] = good.split(".");
  const forged = Buffer.from(JSON.stringify(ours({ access: [{ type: "repository", name: REPO, actions: ["pull", "push", "delete"] }] }))).toString("base64url");
  await assertRejected(`${h}.${forged}.${s}`, /signature/, "payload swapped under a valid signature");

  await assertRejected(new UnsecuredJWT(ours()).encode(), /algorithm|malformed/, "alg none");
  const publicPem = createPublicKey(ourKey).export({ format: "pem", type: "spki" }) as string;
  const confused = await new SignJWT(ours()).setProtectedHeader({ alg: "HS256" }).sign(Buffer.from(publicPem));
  await assertRejected(confused, /algorithm/, "HS256 keyed with the public key");
  await assertRejected("not-a-jwt", /JWT/, "garbage");
});

test("a token expires for real after auth.token.expires", async () => {
  const short = await startTestRegistry({
    auth: { users: { u: { passwordHash: bcryptHash("pw") } }, public: [], token: { expires: "1s", clockSkew: "0s" } },
  });
  try {
    const askedAt = Date.now();
    const { token, expires_in } = await fetchToken(short.url, basic("u", "pw"), []);
    assert.equal(expires_in, 1);
    // Whole-second claims must not shorten the promised lifetime.
    assert.ok((claims(token).exp as number) * 1000 >= askedAt + expires_in * 1000, "the token lives at least expires_in seconds");
    assert.equal((await fetch(`${short.url}/v2/`, { headers: { authorization: bearer(token) } })).status, 200);
    await new Promise((r) => setTimeout(r, 2100));
    const late = await fetch(`${short.url}/v2/`, { headers: { authorization: bearer(token) } });
    assert.equal(late.status, 401);
    assert.match(late.headers.get("www-authenticate") ?? "", /error="invalid_token"/);
  } finally {
    await short.close();
  }
});

test("GET /token with offline_token=true returns a refresh token; POST grant_type=refresh_token trades it for access", async () => {
  const first = await fetchToken(registry.url, basic("alice", "alice-pw"), [`repository:${REPO}:pull`], "&offline_token=true&client_id=test");
  assert.ok(first.refresh_token, "refresh token issued");
  assert.ok(first.issued_at && first.expires_in > 0 && first.token === first.access_token);
  const anonymous = await fetchToken(registry.url, null, [], "&offline_token=true&client_id=test");
  assert.equal(anonymous.refresh_token, undefined, "anonymous callers get no refresh token");

  const refreshed = await postToken({ grant_type: "refresh_token", refresh_token: first.refresh_token!, service: "ferry", client_id: "test", scope: `repository:${REPO}:pull,push repository:other:pull` });
  assert.equal(refreshed.status, 200);
  const body = (await refreshed.json()) as { access_token: string; scope: string; refresh_token: string; expires_in: number };
  assert.equal(body.scope, `repository:${REPO}:pull,push`, "granted scope, cut to the policy");
  assert.equal(body.refresh_token, first.refresh_token);
  assert.equal(claims(body.access_token).sub, "alice");
  assert.equal((await pullWith(body.access_token)).status, 200);

  // A refresh token is not an access token.
  await assertRejected(first.refresh_token!, /refresh token/, "refresh token presented as access token");
  const tampered = first.refresh_token!.slice(0, -4) + (first.refresh_token!.endsWith("AAAA") ? "BBBB" : "AAAA");
  assert.equal((await postToken({ grant_type: "refresh_token", refresh_token: tampered, service: "ferry", client_id: "t" })).status, 401);
  // An access token is not a refresh token.
  assert.equal((await postToken({ grant_type: "refresh_token", refresh_token: first.token, service: "ferry", client_id: "t" })).status, 401);
});

test("POST grant_type=password with access_type=offline; wrong passwords and unknown grant types are refused", async () => {
  const ok = await postToken({ grant_type: "password", username: "alice", password: "alice-pw", service: "ferry", client_id: "t", access_type: "offline", scope: `repository:${REPO}:pull` });
  assert.equal(ok.status, 200);
  const body = (await ok.json()) as { access_token: string; refresh_token?: string };
  assert.ok(body.refresh_token);
  assert.equal((await pullWith(body.access_token)).status, 200);
  const bad = await postToken({ grant_type: "password", username: "alice", password: "nope", service: "ferry", client_id: "t" });
  assert.equal(bad.status, 401);
  assert.equal(await errorCode(bad), "UNAUTHORIZED");
  assert.equal((await postToken({ grant_type: "client_credentials", service: "ferry" })).status, 400);
  const wrongService = await fetch(`${registry.url}/token?service=other&scope=repository:${REPO}:pull`);
  assert.equal(wrongService.status, 400);
});

test("changing the password revokes refresh tokens", async () => {
  const { refresh_token } = await fetchToken(registry.url, basic("alice", "alice-pw"), [], "&offline_token=true&client_id=test");
  await updateHtpasswd(htpasswd, "alice", bcryptHash("new-pw"));
  await new Promise((r) => setTimeout(r, 2200)); // the registry re-reads the file at most every 2 s
  const refused = await postToken({ grant_type: "refresh_token", refresh_token: refresh_token!, service: "ferry", client_id: "t" });
  assert.equal(refused.status, 401);
  assert.equal((await fetch(`${registry.url}/v2/`, { headers: { authorization: basic("alice", "alice-pw") } })).status, 401, "old password gone");
  assert.equal((await fetch(`${registry.url}/v2/`, { headers: { authorization: basic("alice", "new-pw") } })).status, 200, "new password works");
  await updateHtpasswd(htpasswd, "alice", bcryptHash("alice-pw"));
  await new Promise((r) => setTimeout(r, 2200));
});

async function postToken(form: Record<string, string>): Promise<Response> {
  return fetch(`${registry.url}/token`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: new URLSearchParams(form).toString() });
}

function external(iss: string, overrides: JWTPayload = {}): JWTPayload {
  return { iss, aud: "ferry", sub: "someone", iat: now(), exp: now() + 300, access: PULL, ...overrides };
}

test("tokens from a trusted issuer's PEM public key are accepted, with exactly the access they carry", async () => {
  const key = foreignKey.privateKey as KeyObject;
  assert.equal((await pullWith(await sign(key, "RS256", external("corp-auth")))).status, 200);
  // The token's access claim is the authority: no push without it, even for a name our policy knows.
  const asAlice = await sign(key, "RS256", external("corp-auth", { sub: "alice" }));
  const push = await pushBlobAs(registry.url, REPO, randomBytes(10), bearer(asAlice));
  assert.equal(push.status, 401);
  assert.match(push.headers.get("www-authenticate") ?? "", /insufficient_scope/);
  await assertRejected(await sign(key, "RS256", external("corp-auth", { aud: "elsewhere" })), /aud/, "foreign token, wrong aud");
  await assertRejected(await sign(ourKey, "ES256", external("corp-auth")), /signature|algorithm/, "claims corp-auth, signed by another key");
  await assertRejected(await sign(key, "RS256", external("corp-auth", { exp: now() - 600 })), /expired/, "foreign expired");
});

test("tokens verified through a JWKS file (with its own audience) and a JWKS URL", async () => {
  const fileToken = await sign(jwksKey.privateKey as KeyObject, "ES256", external("jwks-file-auth", { aud: "registry.example" }), { kid: "file-1" });
  assert.equal((await pullWith(fileToken)).status, 200);
  await assertRejected(await sign(jwksKey.privateKey as KeyObject, "ES256", external("jwks-file-auth"), { kid: "file-1" }), /aud/, "jwks issuer, default aud");
  const urlToken = await sign(jwksUrlKey.privateKey as KeyObject, "ES256", external("jwks-url-auth"), { kid: "url-1" });
  assert.equal((await pullWith(urlToken)).status, 200);
  await assertRejected(await sign(jwksKey.privateKey as KeyObject, "ES256", external("jwks-url-auth"), { kid: "url-1" }), /signature/, "wrong key for the kid");
});

test("tokens from an issuer trusted through an X.509 certificate", { skip: hasTool("openssl") ? false : "needs openssl" }, async () => {
  assert.equal((await pullWith(await sign(certKey!, "RS256", external("cert-auth")))).status, 200);
});

test("with the built-in service off, challenges point at the external token server and /token is not served", async () => {
  const behind = await startTestRegistry({
    auth: { token: { enabled: false, realm: "https://auth.example.com/token", service: "registry.example", trust: [{ issuer: "corp-auth", publicKey: join(dir, "foreign.pem") }] } },
  });
  try {
    const challenge = await fetch(`${behind.url}/v2/x/tags/list`);
    assert.equal(challenge.status, 401);
    assert.equal(challenge.headers.get("www-authenticate"), `Bearer realm="https://auth.example.com/token",service="registry.example",scope="repository:x:pull"`);
    assert.equal((await fetch(`${behind.url}/token?service=registry.example`)).status, 404);
    const token = await sign(foreignKey.privateKey as KeyObject, "RS256", external("corp-auth", { aud: "registry.example", access: [{ type: "repository", name: "x", actions: ["pull"] }] }));
    assert.equal((await fetch(`${behind.url}/v2/x/tags/list`, { headers: { authorization: bearer(token) } })).status, 404, "authorized; the repository just does not exist");
  } finally {
    await behind.close();
  }
});

test("the signing key is generated once into the metadata store (not the data directory) and reused after a restart", async () => {
  const again = await startTestRegistry({ auth: { users: { u: { passwordHash: bcryptHash("pw") } } } });
  try {
    const { existsSync } = await import("node:fs");
    assert.equal(existsSync(join(again.dataDir, "auth", "token-signing-key-es256.pem")), false, "no per-directory key: replicas share the store's");
    const pem = storedSigningKey(again.dataDir);
    const { token } = await fetchToken(again.url, basic("u", "pw"), []);
    const jwks = (await (await fetch(`${again.url}/token/jwks`)).json()) as { keys: Array<{ kid: string; d?: string }> };
    assert.equal(jwks.keys.length, 1);
    assert.equal(jwks.keys[0]!.d, undefined, "the JWKS holds no private part");
    const dataDir = again.dataDir;
    await again.registry.close();
    const restarted = await startTestRegistry({ auth: { users: { u: { passwordHash: bcryptHash("pw") } } } }, dataDir);
    try {
      assert.equal((await fetch(`${restarted.url}/v2/`, { headers: { authorization: bearer(token) } })).status, 200, "old token still verifies");
      assert.equal(storedSigningKey(dataDir), pem, "no second key generated");
    } finally {
      await restarted.close();
    }
  } finally {
    await (await import("node:fs/promises")).rm(again.dataDir, { recursive: true, force: true });
  }
});

test("upgrading: the key an older Ferry generated into the data directory becomes the store's first key (old tokens stay valid)", async () => {
  const { mkdtemp, mkdir, writeFile: write, rm: remove } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const { generateKeyPairSync, createPrivateKey, createPublicKey } = await import("node:crypto");
  const dataDir = await mkdtemp(join(tmpdir(), "ferry-legacy-key-"));
  try {
    const legacy = generateKeyPairSync("ec", { namedCurve: "P-256" });
    await mkdir(join(dataDir, "auth"), { recursive: true });
    await write(join(dataDir, "auth", "token-signing-key-es256.pem"), legacy.privateKey.export({ format: "pem", type: "pkcs8" }) as string, { mode: 0o600 });
    const upgraded = await startTestRegistry({ auth: { users: { u: { passwordHash: bcryptHash("pw") } } } }, dataDir);
    try {
      const stored = createPublicKey(createPrivateKey(storedSigningKey(dataDir))).export({ format: "der", type: "spki" });
      assert.deepEqual(stored, legacy.publicKey.export({ format: "der", type: "spki" }), "the old key, not a new one");
      const jwks = (await (await fetch(`${upgraded.url}/token/jwks`)).json()) as { keys: Array<{ x: string }> };
      assert.equal(jwks.keys[0]!.x, (legacy.publicKey.export({ format: "jwk" }) as { x: string }).x, "and it is what /token/jwks serves");
    } finally {
      await upgraded.close();
    }
  } finally {
    await remove(dataDir, { recursive: true, force: true });
  }
});

/** The newest signing key in a test registry's SQLite metadata (PKCS#8 PEM). */
function storedSigningKey(dataDir: string): string {
  const db = new Database(join(dataDir, "metadata.db"), { readonly: true });
  try {
    return (db.prepare("SELECT private_key FROM token_signing_keys ORDER BY generation DESC LIMIT 1").get() as { private_key: string }).private_key;
  } finally {
    db.close();
  }
}
