/**
 * Issue 14, "missing": the commands and flags users of skopeo, crane, regctl
 * and oras expect — digest, tag, untag, config, blob get, manifest,
 * referrers, catalog/tags --json in skopeo's shape, inspect --json with the
 * manifest as stored, --platform all, --creds/--src-creds/--dest-creds,
 * --authfile — against Ferry, and untag against the reference registry.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { buildImage, pushBlob, sha256, writeLayout, type TestImage } from "../helpers/images.js";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { skipUnless } from "../helpers/tools.js";
import { bcryptHash } from "../auth/util.js";
import { ferry, startDistribution, tempDir, writeIndexLayout, type Target } from "./harness.js";

describe("registry commands against Ferry", () => {
  let registry: TestRegistry;
  let work: string;
  let image: TestImage;
  let repo: string;

  before(async () => {
    registry = await startTestRegistry();
    work = await tempDir();
    // Annotations and key order a re-serialization would lose or change.
    image = await buildImage({ layers: [{ "a.txt": "one\n" }, { "b.bin": randomBytes(20_000) }], annotations: { "z.last": "1", "a.first": "2" } });
    await writeLayout(join(work, "src"), [{ tag: "v1", image }]);
    repo = `${registry.host}/cmd/app`;
    const push = await ferry(["push", "-q", `oci:${join(work, "src")}:v1`, `${repo}:v1`]);
    assert.equal(push.code, 0, push.stderr);
  });
  after(() => registry.close());

  test("digest, manifest and config print what the registry stores", async () => {
    assert.equal((await ferry(["digest", `${repo}:v1`])).stdout, `${image.manifestDigest}\n`);
    assert.equal((await ferry(["manifest", `${repo}:v1`])).stdout, image.manifest.toString());
    assert.equal((await ferry(["config", `${repo}@${image.manifestDigest}`])).stdout, image.config.bytes.toString());
    const missing = await ferry(["digest", `${repo}:nope`]);
    assert.equal(missing.code, 3);
  });

  test("inspect --json shows the manifest as stored (annotations, field order), tags --json and catalog --json in skopeo's shape", async () => {
    const inspect = JSON.parse((await ferry(["inspect", "--json", `${repo}:v1`])).stdout) as { digest: string; manifest: unknown };
    assert.equal(inspect.digest, image.manifestDigest);
    assert.equal(JSON.stringify(inspect.manifest), JSON.stringify(JSON.parse(image.manifest.toString())));
    assert.deepEqual(JSON.parse((await ferry(["tags", "--json", repo])).stdout), { Repository: repo, Tags: ["v1"] });
    const catalog = JSON.parse((await ferry(["catalog", "--json", registry.host])).stdout) as { Registry: string; Repositories: string[] };
    assert.equal(catalog.Registry, registry.host);
    assert.ok(catalog.Repositories.includes("cmd/app"));
  });

  test("tag adds a tag without copying blobs; untag removes one tag and leaves the manifest and other tags", async () => {
    const tag = await ferry(["tag", `${repo}:v1`, "stable"]);
    assert.equal(tag.code, 0, tag.stderr);
    assert.equal(tag.stdout.trim(), image.manifestDigest);
    assert.deepEqual(JSON.parse((await ferry(["tags", "--json", repo])).stdout).Tags, ["stable", "v1"]);
    const bad = await ferry(["tag", `${repo}:v1`, "-bad"]);
    assert.equal(bad.code, 2);
    const untag = await ferry(["untag", `${repo}:stable`]);
    assert.equal(untag.code, 0, untag.stderr);
    assert.deepEqual(JSON.parse((await ferry(["tags", "--json", repo])).stdout).Tags, ["v1"]);
    assert.equal((await ferry(["digest", `${repo}@${image.manifestDigest}`])).code, 0, "the manifest is still there");
    assert.equal((await ferry(["untag", `${repo}@${image.manifestDigest}`])).code, 2, "untag takes a tag, not a digest");
  });

  test("blob get streams a verified blob to stdout or a file", async () => {
    const layer = image.layers[1]!;
    const stdout = await ferry(["blob", "get", `${repo}@${image.config.digest}`]);
    assert.equal(stdout.stdout, image.config.bytes.toString());
    const file = join(work, "layer.bin");
    const got = await ferry(["blob", "get", "-o", file, `${repo}@${layer.digest}`]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(sha256(await readFile(file)), layer.digest);
    const unknown = await ferry(["blob", "get", `${repo}@sha256:${"0".repeat(64)}`]);
    assert.equal(unknown.code, 3);
    assert.equal((await ferry(["blob", "get", `${repo}:v1`])).code, 2);
  });

  test("referrers lists the OCI 1.1 referrers of an image, filtered by artifact type", async () => {
    const empty = Buffer.from("{}");
    await pushBlob(registry.url, "cmd/app", empty);
    const sbom = Buffer.from(JSON.stringify({ spdxVersion: "SPDX-2.3" }));
    await pushBlob(registry.url, "cmd/app", sbom);
    const artifact = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        artifactType: "application/spdx+json",
        config: { mediaType: "application/vnd.oci.empty.v1+json", digest: sha256(empty), size: 2 },
        layers: [{ mediaType: "application/spdx+json", digest: sha256(sbom), size: sbom.length }],
        subject: { mediaType: image.mediaType, digest: image.manifestDigest, size: image.manifest.length },
      }),
    );
    const put = await fetch(`${registry.url}/v2/cmd/app/manifests/${sha256(artifact)}`, {
      method: "PUT",
      headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
      body: new Uint8Array(artifact),
    });
    assert.equal(put.status, 201, await put.text());
    const text = await ferry(["referrers", `${repo}:v1`]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`${sha256(artifact)}  application/spdx\\+json`));
    const json = JSON.parse((await ferry(["referrers", "--json", "--artifact-type", "application/spdx+json", `${repo}:v1`])).stdout) as { manifests: Array<{ digest: string }> };
    assert.deepEqual(json.manifests.map((m) => m.digest), [sha256(artifact)]);
    const none = JSON.parse((await ferry(["referrers", "--json", "--artifact-type", "application/x-other", `${repo}:v1`])).stdout) as { manifests: unknown[] };
    assert.deepEqual(none.manifests, []);
  });

  test("--platform all copies the whole index; a docker-archive refuses it with a usage error", async () => {
    const amd = await buildImage({ architecture: "amd64", layers: [{ "amd.txt": "amd\n" }] });
    const arm = await buildImage({ architecture: "arm64", layers: [{ "arm.txt": "arm\n" }] });
    const { digest } = await writeIndexLayout(join(work, "multi"), "v1", [
      { image: amd, platform: { os: "linux", architecture: "amd64" } },
      { image: arm, platform: { os: "linux", architecture: "arm64" } },
    ]);
    const push = await ferry(["push", "-q", "--platform", "all", `oci:${join(work, "multi")}:v1`, `${registry.host}/cmd/multi:v1`]);
    assert.equal(push.code, 0, push.stderr);
    assert.equal(push.stdout.trim(), digest);
    assert.equal((await ferry(["digest", "--platform", "linux/arm64", `${registry.host}/cmd/multi:v1`])).stdout.trim(), arm.manifestDigest);
    const archive = await ferry(["pull", "--platform", "all", `${registry.host}/cmd/multi:v1`, `docker-archive:${join(work, "x.tar")}`]);
    assert.equal(archive.code, 2, archive.stderr);
    assert.match(archive.stderr, /holds one image: --platform all/);
  });
});

describe("credentials per command", () => {
  let registry: TestRegistry;
  let work: string;

  before(async () => {
    registry = await startTestRegistry({
      auth: {
        users: {
          alice: { passwordHash: bcryptHash("alice-pw") },
          bob: { passwordHash: bcryptHash("bob-pw") },
        },
        rules: [
          { repositories: ["alice/**"], users: ["alice"], actions: ["*"] },
          { repositories: ["bob/**"], users: ["bob"], actions: ["*"] },
        ],
      },
    });
    work = await tempDir();
    await writeLayout(join(work, "src"), [{ tag: "v1", image: await buildImage() }]);
  });
  after(() => registry.close());

  test("--creds, --src-creds/--dest-creds and --authfile override the stored credentials", async () => {
    const push = await ferry(["push", "-q", "--creds", "alice:alice-pw", `oci:${join(work, "src")}:v1`, `${registry.host}/alice/app:v1`]);
    assert.equal(push.code, 0, push.stderr);
    // A copy between two users' repositories: each side with its own credentials.
    const copy = await ferry(["copy", "-q", "--src-creds", "alice:alice-pw", "--dest-creds", "bob:bob-pw", `${registry.host}/alice/app:v1`, `${registry.host}/bob/app:v1`]);
    assert.equal(copy.code, 0, copy.stderr);
    const wrongSide = await ferry(["copy", "-q", "--src-creds", "bob:bob-pw", "--dest-creds", "bob:bob-pw", `${registry.host}/alice/app:v1`, `${registry.host}/bob/app:v2`]);
    assert.equal(wrongSide.code, 4, wrongSide.stderr);
    // --authfile: a Docker config.json somewhere else.
    const authfile = join(work, "auth.json");
    await writeFile(authfile, JSON.stringify({ auths: { [registry.host]: { auth: Buffer.from("bob:bob-pw").toString("base64") } } }));
    const tags = await ferry(["tags", "--authfile", authfile, `${registry.host}/bob/app`]);
    assert.equal(tags.code, 0, tags.stderr);
    assert.equal(tags.stdout.trim(), "v1");
    assert.equal((await ferry(["tags", `${registry.host}/bob/app`])).code, 4, "without it: anonymous");
    assert.equal((await ferry(["tags", "--creds", "bob", `${registry.host}/bob/app`])).code, 2, "--creds needs USER:PASSWORD");
    // login --authfile writes there.
    const other = join(work, "other.json");
    const login = await ferry(["login", "--authfile", other, "-u", "alice", "--password-stdin", registry.host], { stdin: "alice-pw\n" });
    assert.equal(login.code, 0, login.stderr);
    assert.ok(JSON.parse(await readFile(other, "utf8")).auths[registry.host]);
  });
});

describe("untag on the reference registry", { skip: skipUnless("docker-registry") }, () => {
  let target: Target;
  before(async () => {
    target = await startDistribution();
  });
  after(() => target.close());

  test("a registry that deletes only by digest: untag says so and deletes nothing", async () => {
    const work = await tempDir();
    const image = await buildImage();
    await writeLayout(join(work, "src"), [{ tag: "v1", image }]);
    assert.equal((await ferry(["push", "-q", `oci:${join(work, "src")}:v1`, `${target.host}/d/app:v1`])).code, 0);
    const untag = await ferry(["untag", `${target.host}/d/app:v1`]);
    assert.equal(untag.code, 1);
    assert.match(untag.stderr, /does not support deleting a tag alone.*ferry rm/);
    assert.equal((await ferry(["digest", `${target.host}/d/app:v1`])).stdout.trim(), image.manifestDigest);
  });
});
