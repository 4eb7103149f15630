/**
 * `ferry foreign status|verify HOST/REPO:TAG` against a registry with access
 * control, using the credentials `ferry login` stored (the admin API answers
 * Bearer challenges like /v2, so the CLI fetches a token with them).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestRegistry } from "../helpers/registry.js";
import { basic, bcryptHash, pushBlobAs, putManifestAs } from "../auth/util.js";
import { FakeSource, NONDISTRIBUTABLE, OCI_MANIFEST, blob } from "./helpers.js";
import { ferry } from "./cli-runner.js";

interface StatusJson {
  registry: string;
  repository?: string;
  reference?: string;
  sources: Array<{ url: string; state: string; successes: number; failures: number; referenced: boolean; policy: { allowed: boolean } }>;
  recheck: { interval: number };
  layers: Array<{ digest: string; repository: string }>;
}

test("ferry foreign status/verify HOST/REPO:TAG use the stored credentials of `ferry login`", async (t) => {
  const s = await new FakeSource().start();
  t.after(() => s.close());
  const r = await startTestRegistry({
    auth: {
      users: { root: { passwordHash: bcryptHash("root-secret") }, dev: { passwordHash: bcryptHash("dev-secret") } },
      rules: [{ repositories: ["team/**"], users: ["dev"], actions: ["pull", "push"] }],
      admins: { users: ["root"] },
    },
    federation: { rules: [{ match: "^http://127", serve: "proxy" }], proxy: { allowPrivateNetworks: true }, privateRepositories: "allow" },
  });
  t.after(() => r.close());
  const work = await mkdtemp(join(tmpdir(), "ferry-foreign-cli-"));
  t.after(() => rm(work, { recursive: true, force: true }));

  // An image with one foreign layer, pushed by the team's user.
  const layer = blob(123);
  const url = s.put("/base.tar.gz", layer.bytes);
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }));
  const auth = basic("dev", "dev-secret");
  assert.equal((await pushBlobAs(r.url, "team/app", config, auth)).status, 201);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: `sha256:${(await import("node:crypto")).createHash("sha256").update(config).digest("hex")}`, size: config.length },
      layers: [{ mediaType: NONDISTRIBUTABLE, digest: layer.digest, size: layer.size, urls: [url] }],
    }),
  );
  const put = await putManifestAs(r.url, "team/app", "v1", OCI_MANIFEST, manifest, auth);
  assert.equal(put.status, 201, await put.text());

  const image = `${r.host}/team/app:v1`;
  const anonymous = await ferry(["foreign", "status", image, "--json"], { dockerConfig: join(work, "nobody") });
  assert.equal(anonymous.code, 1);
  assert.match(anonymous.stderr, /HTTP 401 UNAUTHORIZED/);

  const devConfig = join(work, "dev");
  assert.equal((await ferry(["login", r.host, "-u", "dev", "--password-stdin"], { dockerConfig: devConfig, stdin: "dev-secret\n" })).code, 0);
  const denied = await ferry(["foreign", "status", image], { dockerConfig: devConfig });
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /HTTP 403 DENIED: user "dev" may not use the admin API/);

  const rootConfig = join(work, "root");
  const login = await ferry(["login", r.host, "-u", "root", "--password-stdin"], { dockerConfig: rootConfig, stdin: "root-secret\n" });
  assert.equal(login.code, 0, login.stderr);

  const before = await ferry(["foreign", "status", image, "--json"], { dockerConfig: rootConfig });
  assert.equal(before.code, 0, before.stderr);
  const first = JSON.parse(before.stdout) as StatusJson;
  assert.equal(first.registry, r.host);
  assert.equal(first.repository, "team/app");
  assert.equal(first.reference, "v1");
  assert.deepEqual(first.layers.map((l) => l.digest), [layer.digest]);
  assert.deepEqual(
    first.sources.map(({ url, state, failures, referenced }) => ({ url, state, failures, referenced })),
    [{ url, state: "unknown", failures: 0, referenced: true }],
    "referenced but never contacted",
  );
  assert.equal(s.requests.length, 0, "status fetches nothing");

  const verify = await ferry(["foreign", "verify", image, "--mode", "head"], { dockerConfig: rootConfig });
  assert.equal(verify.code, 0, verify.stderr);
  assert.match(verify.stdout, new RegExp(`ok +${layer.digest} +123 bytes`));

  const after = JSON.parse((await ferry(["foreign", "status", image, "--json"], { dockerConfig: rootConfig })).stdout) as StatusJson;
  assert.deepEqual(after.sources.map(({ state, successes }) => ({ state, successes })), [{ state: "healthy", successes: 1 }]);

  const text = await ferry(["foreign", "status", image], { dockerConfig: rootConfig });
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`${url.replace(/\./g, "\\.")} +healthy +1 +0 `));

  const unknownTag = await ferry(["foreign", "status", `${r.host}/team/app:nope`], { dockerConfig: rootConfig });
  assert.equal(unknownTag.code, 1);
  assert.match(unknownTag.stderr, /HTTP 404 MANIFEST_UNKNOWN/);
  for (const request of s.requests) assert.equal(request.headers.authorization, undefined, "registry credentials never reach a foreign source");
});
