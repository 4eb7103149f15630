/**
 * Credentials: `ferry login` against the reference registry with htpasswd
 * Basic auth, config.json written and read by every command, no credentials
 * ever sent to a foreign-layer host; Bearer token challenges with a per-scope
 * token cache; docker-credential-<name> helpers.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { buildImage, sha256, writeLayout } from "../helpers/images.js";
import { skipUnless } from "../helpers/tools.js";
import { getCredentials, storeCredentials, eraseCredentials } from "../../src/client/credentials.js";
import { RegistryClient } from "../../src/client/registry.js";
import { ferry, startDistribution, startForeignServer, tempDir, type ForeignServer, type Target } from "./harness.js";

describe("login and Basic auth against distribution with htpasswd", { skip: skipUnless("docker-registry") }, () => {
  let target: Target;
  let foreign: ForeignServer;
  let work: string;
  let dockerConfig: string;

  before(async () => {
    target = await startDistribution({ users: { alice: "s3cret-pass" } });
    foreign = await startForeignServer();
    work = await tempDir();
    dockerConfig = join(work, "docker");
  });
  after(async () => {
    await target.close();
    await foreign.close();
  });

  test("wrong password: login fails and stores nothing", async () => {
    const login = await ferry(["login", "-u", "alice", "--password-stdin", target.host], { dockerConfig, stdin: "wrong\n" });
    assert.equal(login.code, 4, "exit code 4: authentication");
    assert.match(login.stderr, /refused the password of user alice .*run `ferry login 127\.0\.0\.1:\d+` again/);
    await assert.rejects(readFile(join(dockerConfig, "config.json")));
  });

  test("anonymous push is refused: authentication required, run ferry login (exit 4)", async () => {
    const image = await buildImage();
    await writeLayout(join(work, "anon"), [{ tag: "v1", image }]);
    const push = await ferry(["push", "-q", `oci:${join(work, "anon")}:v1`, `${target.host}/secure/app:v1`], { dockerConfig });
    assert.equal(push.code, 4);
    assert.match(push.stderr, /authentication required to access 127\.0\.0\.1:\d+: run `ferry login 127\.0\.0\.1:\d+`/);
    assert.match(push.stderr, /the registry said: HTTP 401/, "the registry's words stay on a second line");
  });

  test("login stores Docker config.json credentials that push, pull and foreign fetches use correctly", async () => {
    const login = await ferry(["login", "-u", "alice", "--password-stdin", target.host], { dockerConfig, stdin: "s3cret-pass\n" });
    assert.equal(login.code, 0, login.stderr);
    const config = JSON.parse(await readFile(join(dockerConfig, "config.json"), "utf8")) as { auths: Record<string, { auth: string }> };
    assert.equal(Buffer.from(config.auths[target.host]!.auth, "base64").toString(), "alice:s3cret-pass");

    const base = await buildImage({ foreign: [{ files: { "f.bin": randomBytes(5000) }, urls: [] }] });
    const layer = base.layers[1]!;
    const url = foreign.add("f", layer.bytes);
    const manifest = JSON.parse(base.manifest.toString()) as { layers: Array<{ urls?: string[] }> };
    manifest.layers[1]!.urls = [url];
    const bytes = Buffer.from(JSON.stringify(manifest));
    const image = { ...base, manifest: bytes, manifestDigest: sha256(bytes), layers: [base.layers[0]!, { ...layer, urls: [url] }] };
    await writeLayout(join(work, "src"), [{ tag: "v1", image }]);

    const push = await ferry(["push", `oci:${join(work, "src")}:v1`, `${target.host}/secure/app:v1`], { dockerConfig });
    assert.equal(push.code, 0, push.stderr);
    assert.equal(push.stdout.trim(), image.manifestDigest);
    const pull = await ferry(["pull", `${target.host}/secure/app:v1`, `oci:${join(work, "out")}`], { dockerConfig });
    assert.equal(pull.code, 0, pull.stderr);
    assert.ok(foreign.requests.length > 0, "the foreign layer was fetched from its URL");
    for (const request of foreign.requests) {
      assert.equal(request.headers.authorization, undefined, "registry credentials never go to a foreign host");
      assert.equal(request.headers.cookie, undefined);
    }

    const logout = await ferry(["logout", target.host], { dockerConfig });
    assert.equal(logout.code, 0);
    const after = await ferry(["tags", `${target.host}/secure/app`], { dockerConfig });
    assert.equal(after.code, 4);
    assert.match(after.stderr, /authentication required to pull from secure\/app on 127\.0\.0\.1:\d+: run `ferry login/);
  });
});

describe("Bearer token challenges", () => {
  test("a token is fetched from the realm with Basic credentials, cached per scope, and renewed for a new scope", async () => {
    const tokenRequests: Array<{ scope: string[]; authorization?: string }> = [];
    const seen: Array<string | undefined> = [];
    const server = createServer((req: IncomingMessage, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      if (url.pathname === "/token") {
        tokenRequests.push({ scope: url.searchParams.getAll("scope"), authorization: req.headers.authorization });
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token: `tok:${url.searchParams.getAll("scope").join(" ")}`, expires_in: 300 }));
        return;
      }
      seen.push(req.headers.authorization);
      const repository = /^\/v2\/(.+)\/tags\/list$/.exec(url.pathname)?.[1];
      const wanted = `Bearer tok:repository:${repository}:pull`;
      if (req.headers.authorization !== wanted) {
        const { port } = server.address() as AddressInfo;
        res
          .writeHead(401, {
            "www-authenticate": `Bearer realm="http://127.0.0.1:${port}/token",service="test",scope="repository:${repository}:pull"`,
            "content-type": "application/json",
          })
          .end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "token required" }] }));
        return;
      }
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ name: repository, tags: ["t"] }));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const client = new RegistryClient({ registry: `127.0.0.1:${port}`, credentials: { username: "bob", password: "pw" } });
      assert.deepEqual(await client.listTags("a/b"), ["t"]);
      assert.deepEqual(await client.listTags("a/b"), ["t"]);
      assert.equal(tokenRequests.length, 1, "the second request reuses the cached token");
      assert.deepEqual(tokenRequests[0]!.scope, ["repository:a/b:pull"]);
      assert.equal(tokenRequests[0]!.authorization, `Basic ${Buffer.from("bob:pw").toString("base64")}`);
      assert.deepEqual(await client.listTags("c/d"), ["t"]);
      assert.equal(tokenRequests.length, 2, "another scope needs another token");
      assert.equal(seen.filter((a) => a === undefined).length, 1, "only the very first request went out without a token");
    } finally {
      server.close();
    }
  });
});

describe("Docker config.json and credential helpers", () => {
  test("credsStore helpers are run for get, store and erase; plain auths otherwise", async () => {
    const dir = await tempDir();
    const bin = join(dir, "bin");
    await mkdir(bin);
    const store = join(dir, "helper-store.json");
    // A fake docker-credential helper keeping one secret in a file (protocol of docker-credential-helpers).
    await writeFile(
      join(bin, "docker-credential-fake"),
      `#!/bin/sh\ninput=$(cat)\ncase "$1" in\n  store) printf '%s' "$input" > ${store} ;;\n  get) if [ -f ${store} ]; then node -e 'const s=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));process.stdout.write(JSON.stringify({ServerURL:s.ServerURL,Username:s.Username,Secret:s.Secret}))' ${store}; else echo "credentials not found in native keychain"; exit 1; fi ;;\n  erase) rm -f ${store} ;;\nesac\n`,
    );
    await chmod(join(bin, "docker-credential-fake"), 0o755);
    const originalPath = process.env.PATH;
    process.env.PATH = `${bin}:${originalPath}`;
    try {
      const path = join(dir, "config.json");
      await writeFile(path, JSON.stringify({ credsStore: "fake" }));
      assert.equal(await getCredentials("reg.example:5000", path), undefined);
      await storeCredentials("reg.example:5000", { username: "carol", password: "pw1" }, path);
      assert.deepEqual(await getCredentials("reg.example:5000", path), { username: "carol", password: "pw1" });
      const config = JSON.parse(await readFile(path, "utf8")) as { auths: Record<string, unknown> };
      assert.deepEqual(config.auths["reg.example:5000"], {}, "the secret stays in the helper, not in config.json");
      assert.equal(await eraseCredentials("reg.example:5000", path), true);
      assert.equal(await getCredentials("reg.example:5000", path), undefined);

      const plain = join(dir, "plain.json");
      await writeFile(plain, JSON.stringify({ auths: { "other:1": { auth: Buffer.from("dave:p:w").toString("base64") } }, credHelpers: { "helped:1": "fake" } }));
      assert.deepEqual(await getCredentials("other:1", plain), { username: "dave", password: "p:w" });
      assert.equal(await getCredentials("helped:1", plain), undefined, "credHelpers wins for its host");
    } finally {
      process.env.PATH = originalPath;
    }
  });
});
