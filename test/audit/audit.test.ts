/**
 * The audit log through real requests: who pushed, deleted, moved a tag,
 * logged in or failed to, from which address, under which request id; pulls
 * are not in it, and no password or token ever is.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, mkdtemp, rm, writeFile, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { buildImage } from "../helpers/images.js";
import { request } from "node:http";
import { basic, bcryptHash, bearer, fetchToken, pushBlobAs, pushImageAs } from "../auth/util.js";
import { loadConfig } from "../../src/config/load.js";
import { startRegistry } from "../../src/server.js";
import { startServeProcess } from "../helpers/serve-process.js";

type Line = Record<string, unknown>;

const ALICE_PW = "alice-Secret-pw-1";
const BOB_PW = "bob-Secret-pw-2";

function authConfig(rateLimit: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    auth: {
      users: { alice: { passwordHash: bcryptHash(ALICE_PW) }, bob: { passwordHash: bcryptHash(BOB_PW) } },
      rules: [
        { repositories: ["team/**"], users: ["alice"], actions: ["*"] },
        { repositories: ["team/**"], users: ["bob"], actions: ["pull"] },
      ],
      rateLimit,
    },
  };
}

async function registry(t: { after(fn: () => Promise<void>): void }, config: Record<string, unknown>): Promise<TestRegistry> {
  const r = await startTestRegistry(config);
  t.after(() => r.close());
  return r;
}

/** The audit lines written so far (the registry is closed first, so every queued line is on disk). */
async function auditLines(r: TestRegistry): Promise<{ lines: Line[]; text: string }> {
  await r.registry.close();
  const text = await readFile(join(r.dataDir, "audit.log"), "utf8");
  const lines = text.split("\n").filter(Boolean).map((l) => JSON.parse(l) as Line);
  return { lines, text };
}

function pick(lines: Line[], action: string): Line[] {
  return lines.filter((l) => l.action === action);
}

test("pushes, tag moves and deletions are audited with user, address and request id; pulls are not", async (t) => {
  const r = await registry(t, authConfig());
  const alice = basic("alice", ALICE_PW);
  const first = await buildImage({ layers: [{ "a.txt": "one" }] });
  const second = await buildImage({ layers: [{ "a.txt": "two" }] });
  await pushImageAs(r.url, "team/app", "v1", first, alice);
  await pushImageAs(r.url, "team/app", "v1", second, alice);
  // Pushing the same manifest again to the same tag is a push, not a move.
  await pushImageAs(r.url, "team/app", "v1", second, alice);
  const pull = await fetch(`${r.url}/v2/team/app/manifests/v1`, { headers: { authorization: alice, Accept: second.mediaType } });
  assert.equal(pull.status, 200);
  await pull.arrayBuffer();

  const denied = await fetch(`${r.url}/v2/team/app/manifests/${first.manifestDigest}`, { method: "DELETE", headers: { authorization: basic("bob", BOB_PW) } });
  assert.equal(denied.status, 403);
  await denied.arrayBuffer();
  const untag = await fetch(`${r.url}/v2/team/app/manifests/v1`, { method: "DELETE", headers: { authorization: alice } });
  assert.equal(untag.status, 202);
  const deleted = await fetch(`${r.url}/v2/team/app/manifests/${first.manifestDigest}`, { method: "DELETE", headers: { authorization: alice } });
  assert.equal(deleted.status, 202);
  const blobGone = await fetch(`${r.url}/v2/team/app/blobs/${first.layers[0]!.digest}`, { method: "DELETE", headers: { authorization: alice } });
  assert.equal(blobGone.status, 202);

  const { lines } = await auditLines(r);
  for (const line of lines) {
    assert.equal(line.client, "127.0.0.1");
    assert.match(String(line.requestId), /^[0-9a-z]+-[0-9a-z]+$/);
    assert.ok(!Number.isNaN(Date.parse(String(line.time))), `time ${String(line.time)}`);
  }
  const pushes = pick(lines, "push").filter((l) => l.outcome === "ok");
  assert.deepEqual(
    pushes.map((l) => [l.user, l.repository, l.tag, l.digest]),
    [
      ["alice", "team/app", "v1", first.manifestDigest],
      ["alice", "team/app", "v1", second.manifestDigest],
      ["alice", "team/app", "v1", second.manifestDigest],
    ],
  );
  const moves = pick(lines, "tag.move");
  assert.equal(moves.length, 1);
  assert.deepEqual([moves[0]!.user, moves[0]!.repository, moves[0]!.tag, moves[0]!.from, moves[0]!.to], ["alice", "team/app", "v1", first.manifestDigest, second.manifestDigest]);
  // The move is the second push's doing: same request.
  assert.equal(moves[0]!.requestId, pushes[1]!.requestId);

  const deletions = lines.filter((l) => String(l.action).startsWith("delete."));
  assert.deepEqual(
    deletions.map((l) => [l.action, l.outcome, l.user, l.tag ?? l.digest]),
    [
      ["delete.manifest", "denied", "bob", first.manifestDigest],
      ["delete.tag", "ok", "alice", "v1"],
      ["delete.manifest", "ok", "alice", first.manifestDigest],
      ["delete.blob", "ok", "alice", first.layers[0]!.digest],
    ],
  );
  // Blob uploads and the pull are not audit events.
  assert.deepEqual([...new Set(lines.map((l) => l.action))].sort(), ["delete.blob", "delete.manifest", "delete.tag", "push", "tag.move"]);
});

test("logins and failed logins are audited with a reason class, and nothing secret reaches the file", async (t) => {
  const r = await registry(t, authConfig({ perUser: 3 }));
  const send = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(`${r.url}${path}`, init);
    await res.arrayBuffer();
    return res.status;
  };
  const form = (fields: Record<string, string>) => ({
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ service: "ferry", client_id: "test", ...fields }).toString(),
  });

  // Anonymous probes (docker's first request) are no login attempts.
  assert.equal(await send("/v2/"), 401);
  // docker login against /v2/ with Basic credentials.
  assert.equal(await send("/v2/", { headers: { authorization: basic("alice", ALICE_PW) } }), 200);
  assert.equal(await send("/v2/", { headers: { authorization: basic("alice", "wrong-password-XYZ") } }), 401);
  // The token service: GET with Basic, POST with a password, a refresh.
  const token = await fetchToken(r.url, basic("bob", BOB_PW), ["repository:team/app:pull"]);
  assert.equal(await send("/token?service=ferry", { headers: { authorization: basic("bob", "bad-bob-password") } }), 401);
  const oauth = await fetch(`${r.url}/token`, form({ grant_type: "password", username: "alice", password: ALICE_PW, access_type: "offline", scope: "repository:team/app:pull" }));
  assert.equal(oauth.status, 200);
  const refreshToken = ((await oauth.json()) as { refresh_token: string }).refresh_token;
  assert.equal(await send("/token", form({ grant_type: "refresh_token", refresh_token: refreshToken })), 200);
  assert.equal(await send("/token", form({ grant_type: "refresh_token", refresh_token: "not.a.token" })), 401);
  // An anonymous token is no login.
  await fetchToken(r.url, null, ["repository:team/app:pull"]);
  // Credentials that do not even decode, and a forged bearer token.
  assert.equal(await send("/v2/", { headers: { authorization: "Basic %%%not-base64%%%" } }), 401);
  assert.equal(await send("/v2/team/app/tags/list", { headers: { authorization: bearer("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.") } }), 401);
  // Guessing mallory's password until the limit refuses to check it.
  for (let i = 0; i < 3; i++) assert.equal(await send("/token", form({ grant_type: "password", username: "mallory", password: `guess-${i}-pw` })), 401);
  assert.equal(await send("/token", form({ grant_type: "password", username: "mallory", password: "guess-3-pw" })), 429);

  const { lines, text } = await auditLines(r);
  assert.deepEqual(
    pick(lines, "login").map((l) => [l.user, l.grant]),
    [
      ["alice", "basic"],
      ["bob", "basic"],
      ["alice", "password"],
      ["alice", "refresh_token"],
    ],
  );
  assert.deepEqual(
    pick(lines, "login.failed").map((l) => [l.user, l.reason, l.status]),
    [
      ["alice", "bad-credentials", 401],
      ["bob", "bad-credentials", 401],
      [null, "refresh-rejected", 401],
      [null, "malformed", 401],
      [null, "token-rejected", 401],
      ["mallory", "bad-credentials", 401],
      ["mallory", "bad-credentials", 401],
      ["mallory", "bad-credentials", 401],
      ["mallory", "rate-limited", 429],
    ],
  );
  assert.ok(lines.every((l) => l.client === "127.0.0.1" && typeof l.requestId === "string"));
  for (const secret of [ALICE_PW, BOB_PW, "wrong-password-XYZ", "bad-bob-password", "guess-1-pw", token.token, refreshToken, "Basic ", "Bearer "]) {
    assert.ok(!text.includes(secret), `the audit log contains ${secret.slice(0, 12)}…`);
  }
});

test("admin API calls that may change something are audited, refused ones too; reading the admin API is not", async (t) => {
  const config = authConfig();
  (config.auth as Record<string, unknown>).admins = { users: ["alice"] };
  const r = await registry(t, config);
  const call = async (method: string, path: string, authorization: string) => {
    const res = await fetch(`${r.url}${path}`, { method, headers: { authorization } });
    await res.arrayBuffer();
    return res.status;
  };
  await pushImageAs(r.url, "team/app", "v1", await buildImage(), basic("alice", ALICE_PW));
  assert.equal(await call("POST", "/ferry/v1/foreign/verify?repository=team/app&reference=v1", basic("alice", ALICE_PW)), 200);
  assert.equal(await call("POST", "/ferry/v1/foreign/verify?repository=team/app&reference=v1", basic("bob", BOB_PW)), 403);
  assert.equal(await call("GET", "/ferry/v1/foreign/sources", basic("alice", ALICE_PW)), 200);

  const { lines } = await auditLines(r);
  assert.deepEqual(
    pick(lines, "admin").map((l) => [l.user, l.outcome, l.method, l.path]),
    [
      ["alice", "ok", "POST", "/ferry/v1/foreign/verify"],
      ["bob", "denied", "POST", "/ferry/v1/foreign/verify"],
    ],
  );
});

test("audit.path moves the file, audit.enabled: false writes none, and an unusable path stops start-up with the path in the message", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "ferry-audit-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const elsewhere = join(dir, "logs", "ferry-audit.jsonl");
  const moved = await registry(t, { audit: { path: elsewhere } });
  const image = await buildImage();
  await pushImageAs(moved.url, "app", "v1", image, "Basic eDp5");
  await moved.registry.close();
  const line = JSON.parse((await readFile(elsewhere, "utf8")).trim()) as Line;
  assert.equal(line.action, "push");
  assert.equal(line.user, null, "an open registry's callers are anonymous");
  assert.equal((await stat(elsewhere)).mode & 0o777, 0o640);
  await assert.rejects(stat(join(moved.dataDir, "audit.log")));

  const off = await registry(t, { audit: { enabled: false } });
  await pushImageAs(off.url, "app", "v1", image, "Basic eDp5");
  await off.registry.close();
  await assert.rejects(stat(join(off.dataDir, "audit.log")));

  const file = join(dir, "plain-file");
  await writeFile(file, "x");
  const config = loadConfig({ env: {}, overrides: { listen: "127.0.0.1:0", data: join(dir, "data"), log: { level: "silent" }, audit: { path: join(file, "audit.log") } } });
  await assert.rejects(startRegistry(config), (error: Error) => {
    assert.match(error.message, /^audit log .*plain-file\/audit\.log cannot be opened for appending/);
    assert.match(error.message, /audit\.enabled: false/);
    return true;
  });
});

test("ferry serve --workers 2 writes one audit file in <data> that both workers append whole lines to", async (t) => {
  const data = await mkdtemp(join(tmpdir(), "ferry-audit-workers-"));
  t.after(() => rm(data, { recursive: true, force: true }));
  const serve = await startServeProcess({ data, workers: 2 });
  const pushed: Array<{ repository: string; digest: string }> = [];
  // Request ids start with the process id: the lines say which worker wrote them.
  const writersSoFar = async () =>
    new Set(
      (await readFile(join(data, "audit.log"), "utf8").catch(() => ""))
        .split("\n")
        .filter((l) => l.endsWith("}"))
        .map((l) => String((JSON.parse(l) as Line).requestId).split("-")[0]),
    );
  try {
    // Workers start one after another: push rounds until the second one has taken some.
    for (let round = 0; round < 10 && (await writersSoFar()).size < 2; round++) {
      const images = await Promise.all([...Array(6).keys()].map((i) => buildImage({ layers: [{ "n.txt": `image ${round}-${i}` }] })));
      for (const [i, image] of images.entries()) {
        for (const blob of [image.config, ...image.layers]) assert.equal((await pushBlobAs(serve.url, `app${round}-${i}`, blob.bytes, null)).status, 201);
      }
      // A new connection per manifest PUT, all at once: the cluster's round-robin hands them to every worker.
      const statuses = await Promise.all(images.map((image, i) => putOnNewConnection(`${serve.url}/v2/app${round}-${i}/manifests/v1`, image.mediaType, image.manifest)));
      assert.deepEqual(statuses, images.map(() => 201));
      images.forEach((image, i) => pushed.push({ repository: `app${round}-${i}`, digest: image.manifestDigest }));
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
  } finally {
    await serve.stop();
  }
  const lines = (await readFile(join(data, "audit.log"), "utf8")).split("\n").filter(Boolean).map((l) => JSON.parse(l) as Line);
  assert.deepEqual(
    lines.map((l) => `${String(l.repository)} ${String(l.digest)}`).sort(),
    pushed.map((p) => `${p.repository} ${p.digest}`).sort(),
  );
  const writers = new Set(lines.map((l) => String(l.requestId).split("-")[0]));
  assert.equal(writers.size, 2, `lines from ${[...writers].join(", ")}`);
});

function putOnNewConnection(url: string, mediaType: string, body: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "PUT", agent: false, headers: { "Content-Type": mediaType, "Content-Length": body.length } }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.end(body);
  });
}
