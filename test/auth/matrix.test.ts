/**
 * The permission matrix: every principal × repository × action, over real
 * HTTP against a running registry, once with Basic credentials and once with
 * a token from /token. The expected table is written out by hand from the
 * policy below (not computed by the code under test).
 *
 * Denials: callers without credentials (and anonymous tokens) get 401
 * UNAUTHORIZED with a Bearer challenge naming the scope; identified users
 * the policy refuses get 403 DENIED.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { buildImage, sha256, type TestImage } from "../helpers/images.js";
import { basic, bcryptHash, bearer, claims, errorCode, fetchToken, pushBlobAs, pushImageAs, putManifestAs } from "./util.js";

const PASSWORD: Record<string, string> = { admin: "admin-pw", alice: "alice-pw", bob: "bob-pw", ci: "ci-pw", carol: "carol-pw" };

const AUTH = {
  users: {
    admin: { passwordHash: bcryptHash(PASSWORD.admin!) },
    alice: { passwordHash: bcryptHash(PASSWORD.alice!), groups: ["team-a"] },
    bob: { passwordHash: bcryptHash(PASSWORD.bob!) },
    ci: { passwordHash: bcryptHash(PASSWORD.ci!) },
    carol: { passwordHash: bcryptHash(PASSWORD.carol!) },
  },
  rules: [
    { repositories: ["team-a/**"], groups: ["team-a"], actions: ["*"] },
    { repositories: ["team-a/**"], users: ["bob"], actions: ["pull"] },
    { repositories: ["ci/**"], users: ["ci"], actions: ["pull", "push"] },
    { repositories: ["shared/*"], users: ["*"], actions: ["pull"] },
  ],
  public: ["base/*"],
  admins: { users: ["admin"] },
};

const REPOSITORIES = ["base/alpine", "base/nested/x", "team-a/app", "team-a/sub/deep", "ci/tool", "shared/lib", "other/x"] as const;
type Repo = (typeof REPOSITORIES)[number];
const PRINCIPALS = ["anonymous", "admin", "alice", "bob", "ci", "carol"] as const;
type Who = (typeof PRINCIPALS)[number];

// p = pull, u = push, d = delete. Hand-written from AUTH above.
const EXPECTED: Record<Who, Record<Repo, string>> = {
  anonymous: { "base/alpine": "p", "base/nested/x": "", "team-a/app": "", "team-a/sub/deep": "", "ci/tool": "", "shared/lib": "", "other/x": "" },
  admin: { "base/alpine": "pud", "base/nested/x": "pud", "team-a/app": "pud", "team-a/sub/deep": "pud", "ci/tool": "pud", "shared/lib": "pud", "other/x": "pud" },
  alice: { "base/alpine": "p", "base/nested/x": "", "team-a/app": "pud", "team-a/sub/deep": "pud", "ci/tool": "", "shared/lib": "p", "other/x": "" },
  bob: { "base/alpine": "p", "base/nested/x": "", "team-a/app": "p", "team-a/sub/deep": "p", "ci/tool": "", "shared/lib": "p", "other/x": "" },
  ci: { "base/alpine": "p", "base/nested/x": "", "team-a/app": "", "team-a/sub/deep": "", "ci/tool": "pu", "shared/lib": "p", "other/x": "" },
  carol: { "base/alpine": "p", "base/nested/x": "", "team-a/app": "", "team-a/sub/deep": "", "ci/tool": "", "shared/lib": "p", "other/x": "" },
};

let registry: TestRegistry;
let image: TestImage;
const adminAuth = basic("admin", PASSWORD.admin!);

before(async () => {
  registry = await startTestRegistry({ auth: AUTH });
  image = await buildImage({ layers: [{ "hello.txt": "matrix\n" }] });
  for (const repository of REPOSITORIES) await pushImageAs(registry.url, repository, "v1", image, adminAuth);
});

after(async () => {
  await registry?.close();
});

type Mode = "basic" | "token";

async function credentialsFor(who: Who, mode: Mode, repository: string): Promise<string | null> {
  if (mode === "basic") return who === "anonymous" ? null : basic(who, PASSWORD[who]!);
  const login = who === "anonymous" ? null : basic(who, PASSWORD[who]!);
  const response = await fetchToken(registry.url, login, [`repository:${repository}:pull,push,delete`]);
  return bearer(response.token);
}

async function assertDenied(response: Response, who: Who, scope: string, what: string): Promise<void> {
  if (who === "anonymous") {
    assert.equal(response.status, 401, `${what}: anonymous callers are challenged`);
    assert.equal(await errorCode(response), "UNAUTHORIZED", what);
    const challenge = response.headers.get("www-authenticate") ?? "";
    assert.match(challenge, new RegExp(`^Bearer realm="${registry.url}/token",service="ferry",scope="${scope}"`), what);
  } else {
    assert.equal(response.status, 403, `${what}: identified users the policy refuses get 403`);
    assert.equal(await errorCode(response), "DENIED", what);
  }
}

async function manifestExists(repository: string, reference: string): Promise<boolean> {
  const response = await fetch(`${registry.url}/v2/${repository}/manifests/${reference}`, { method: "HEAD", headers: { authorization: adminAuth } });
  return response.status === 200;
}

async function blobExists(repository: string, digest: string): Promise<boolean> {
  const response = await fetch(`${registry.url}/v2/${repository}/blobs/${digest}`, { method: "HEAD", headers: { authorization: adminAuth } });
  return response.status === 200;
}

for (const mode of ["basic", "token"] as const) {
  for (const who of PRINCIPALS) {
    test(`matrix (${mode}): ${who}`, async () => {
      for (const repository of REPOSITORIES) {
        const allowed = EXPECTED[who][repository];
        const auth = await credentialsFor(who, mode, repository);
        const headers: Record<string, string> = auth ? { authorization: auth } : {};
        const cell = `${who} ${mode} ${repository}`;

        // pull
        const pull = await fetch(`${registry.url}/v2/${repository}/manifests/v1`, { headers: { ...headers, accept: image.mediaType } });
        if (allowed.includes("p")) {
          assert.equal(pull.status, 200, `${cell} pull`);
          assert.equal(pull.headers.get("docker-content-digest"), image.manifestDigest);
          await pull.arrayBuffer();
        } else {
          await assertDenied(pull, who, `repository:${repository}:pull`, `${cell} pull`);
        }

        // push: a new blob lands only when allowed
        const bytes = randomBytes(64);
        const push = await pushBlobAs(registry.url, repository, bytes, auth);
        if (allowed.includes("u")) {
          assert.equal(push.status, 201, `${cell} push: ${await push.clone().text()}`);
          assert.ok(await blobExists(repository, sha256(bytes)), `${cell} pushed blob is there`);
        } else {
          await assertDenied(push, who, `repository:${repository}:pull,push`, `${cell} push`);
          assert.equal(await blobExists(repository, sha256(bytes)), false, `${cell} refused push left nothing`);
        }

        // delete: the admin puts a fresh manifest, the principal tries to delete it
        const manifest = JSON.parse(image.manifest.toString("utf8")) as Record<string, unknown>;
        manifest.annotations = { cell, nonce: randomBytes(8).toString("hex") };
        const body = Buffer.from(JSON.stringify(manifest));
        const digest = sha256(body);
        const put = await putManifestAs(registry.url, repository, digest, image.mediaType, body, adminAuth);
        assert.equal(put.status, 201);
        const del = await fetch(`${registry.url}/v2/${repository}/manifests/${digest}`, { method: "DELETE", headers });
        if (allowed.includes("d")) {
          assert.equal(del.status, 202, `${cell} delete: ${await del.clone().text()}`);
          assert.equal(await manifestExists(repository, digest), false, `${cell} deleted`);
        } else {
          await assertDenied(del, who, `repository:${repository}:delete`, `${cell} delete`);
          assert.equal(await manifestExists(repository, digest), true, `${cell} refused delete kept the manifest`);
        }
      }
    });
  }
}

test("the token grants exactly the policy's share of the requested scope", async () => {
  const { token } = await fetchToken(registry.url, basic("ci", PASSWORD.ci!), [
    "repository:ci/tool:pull,push,delete",
    "repository:team-a/app:pull",
    "repository:base/alpine:pull,push",
  ]);
  const payload = claims(token);
  assert.deepEqual(payload.access, [
    { type: "repository", name: "ci/tool", actions: ["pull", "push"] },
    { type: "repository", name: "base/alpine", actions: ["pull"] },
  ]);
  assert.equal(payload.sub, "ci");
  assert.equal(payload.aud, "ferry");
  assert.equal(payload.iss, "ferry");
});

test("catalog lists only what the caller may pull; anonymous callers are challenged", async () => {
  const catalog = async (authorization: string | null) => {
    const response = await fetch(`${registry.url}/v2/_catalog`, { headers: authorization ? { authorization } : {} });
    return { status: response.status, body: (await response.json()) as { repositories?: string[] }, challenge: response.headers.get("www-authenticate") };
  };
  for (const who of PRINCIPALS.filter((p) => p !== "anonymous")) {
    const expected = REPOSITORIES.filter((r) => EXPECTED[who][r].includes("p")).sort();
    const viaBasic = await catalog(basic(who, PASSWORD[who]!));
    assert.equal(viaBasic.status, 200);
    assert.deepEqual(viaBasic.body.repositories, expected, `${who} basic`);
    const { token } = await fetchToken(registry.url, basic(who, PASSWORD[who]!), ["registry:catalog:*"]);
    const viaToken = await catalog(bearer(token));
    assert.equal(viaToken.status, 200);
    assert.deepEqual(viaToken.body.repositories, expected, `${who} token`);
  }
  const anonymous = await catalog(null);
  assert.equal(anonymous.status, 401);
  assert.equal(anonymous.challenge, `Bearer realm="${registry.url}/token",service="ferry",scope="registry:catalog:*"`);
  const { token } = await fetchToken(registry.url, null, ["registry:catalog:*"]);
  assert.deepEqual((await catalog(bearer(token))).body.repositories, ["base/alpine"]);
  // A token without the catalog scope must ask for it.
  const { token: narrow } = await fetchToken(registry.url, basic("admin", PASSWORD.admin!), ["repository:other/x:pull"]);
  const narrowResponse = await catalog(bearer(narrow));
  assert.equal(narrowResponse.status, 401);
  assert.match(narrowResponse.challenge ?? "", /scope="registry:catalog:\*",error="insufficient_scope"/);
});

test("GET /v2/ challenges anonymous callers (clients learn the realm there) and admits any valid login or token", async () => {
  const anonymous = await fetch(`${registry.url}/v2/`);
  assert.equal(anonymous.status, 401);
  assert.equal(await errorCode(anonymous), "UNAUTHORIZED");
  assert.equal(anonymous.headers.get("www-authenticate"), `Bearer realm="${registry.url}/token",service="ferry"`);
  assert.equal((await fetch(`${registry.url}/v2/`, { headers: { authorization: basic("carol", PASSWORD.carol!) } })).status, 200);
  const wrong = await fetch(`${registry.url}/v2/`, { headers: { authorization: basic("carol", "nope") } });
  assert.equal(wrong.status, 401);
  assert.equal(await errorCode(wrong), "UNAUTHORIZED");
  assert.match(wrong.headers.get("www-authenticate") ?? "", /^Bearer realm=/);
  const { token } = await fetchToken(registry.url, null, []);
  assert.equal((await fetch(`${registry.url}/v2/`, { headers: { authorization: bearer(token) } })).status, 200);
  const unknownScheme = await fetch(`${registry.url}/v2/`, { headers: { authorization: "Digest abc" } });
  assert.equal(unknownScheme.status, 401);
});

test("a token lacking a scope the policy would grant gets 401 insufficient_scope; one the policy refuses gets 403", async () => {
  const { token } = await fetchToken(registry.url, basic("alice", PASSWORD.alice!), ["repository:team-a/app:pull"]);
  const push = await pushBlobAs(registry.url, "team-a/app", randomBytes(16), bearer(token));
  assert.equal(push.status, 401);
  assert.equal(
    push.headers.get("www-authenticate"),
    `Bearer realm="${registry.url}/token",service="ferry",scope="repository:team-a/app:pull,push",error="insufficient_scope"`,
  );
  const other = await pushBlobAs(registry.url, "other/x", randomBytes(16), bearer(token));
  assert.equal(other.status, 403);
  assert.equal(await errorCode(other), "DENIED");
});

test("admin endpoints: admins only; others 403, anonymous 401", async () => {
  assert.equal((await fetch(`${registry.url}/metrics`, { headers: { authorization: adminAuth } })).status, 200);
  const alice = await fetch(`${registry.url}/metrics`, { headers: { authorization: basic("alice", PASSWORD.alice!) } });
  assert.equal(alice.status, 403);
  assert.equal(await errorCode(alice), "DENIED");
  const anonymous = await fetch(`${registry.url}/metrics`);
  assert.equal(anonymous.status, 401);
  const { token } = await fetchToken(registry.url, adminAuth, []);
  assert.equal((await fetch(`${registry.url}/metrics`, { headers: { authorization: bearer(token) } })).status, 200);
  const { token: aliceToken } = await fetchToken(registry.url, basic("alice", PASSWORD.alice!), []);
  assert.equal((await fetch(`${registry.url}/metrics`, { headers: { authorization: bearer(aliceToken) } })).status, 403);
});

test("cross-repository mount honours pull permission on the source", async () => {
  const secret = randomBytes(100);
  assert.equal((await pushBlobAs(registry.url, "other/x", secret, adminAuth)).status, 201);
  const alice = basic("alice", PASSWORD.alice!);
  const mount = (from: string, digest: string, auth: string) =>
    fetch(`${registry.url}/v2/team-a/app/blobs/uploads/?mount=${digest}&from=${from}`, { method: "POST", headers: { authorization: auth } });
  const refused = await mount("other/x", sha256(secret), alice);
  assert.equal(refused.status, 202, "no pull on the source: an upload session instead of a mount");
  assert.equal(await blobExists("team-a/app", sha256(secret)), false);
  await fetch(new URL(refused.headers.get("location")!, registry.url), { method: "DELETE", headers: { authorization: alice } });
  // Without `from` the registry must not search repositories alice cannot read either.
  const searched = await fetch(`${registry.url}/v2/team-a/app/blobs/uploads/?mount=${sha256(secret)}`, { method: "POST", headers: { authorization: alice } });
  assert.equal(searched.status, 202);
  const publicLayer = image.layers[0]!.digest;
  const fromPublic = await fetch(`${registry.url}/v2/team-a/sub/deep/blobs/uploads/?mount=${publicLayer}&from=base/alpine`, { method: "POST", headers: { authorization: alice } });
  assert.equal(fromPublic.status, 201, "public source: mounted");
  assert.equal((await mount("other/x", sha256(secret), adminAuth)).status, 201, "admin may read the source: mounted");
});

test("federation sees private repositories as those anonymous users cannot pull", () => {
  const access = registry.registry.services.access;
  assert.equal(access.open, false);
  assert.equal(access.isAnonymousReadable("base/alpine"), true);
  assert.equal(access.isAnonymousReadable("base/nested/x"), false);
  assert.equal(access.isAnonymousReadable("team-a/app"), false);
});
