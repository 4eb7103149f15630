/**
 * `ferry push | pull | copy | inspect | tags | rm | catalog` end to end against
 * a Ferry server and against the reference registry (distribution 2.8), with
 * images the tests build themselves and foreign-layer hosts that go down or lie.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { buildImage, sha256, writeLayout, type TestImage } from "../helpers/images.js";
import { skipUnless } from "../helpers/tools.js";
import { skipUnlessS3 } from "../helpers/s3-rgw.js";
import {
  deadUrl,
  ferry,
  readBlob,
  startDistribution,
  startFerry,
  startFerryServeOnS3Target,
  startForeignServer,
  tarLayer,
  tempDir,
  writeDockerArchive,
  writeIndexLayout,
  type ForeignServer,
  type Target,
} from "./harness.js";

const ACCEPT = [
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
].join(", ");

async function getManifest(target: Target, repository: string, reference: string): Promise<Buffer> {
  const response = await fetch(`${target.url}/v2/${repository}/manifests/${reference}`, { headers: { accept: ACCEPT } });
  assert.equal(response.status, 200, `GET manifest ${repository}:${reference}`);
  return Buffer.from(await response.arrayBuffer());
}

async function blobStatus(target: Target, repository: string, digest: string): Promise<number> {
  const response = await fetch(`${target.url}/v2/${repository}/blobs/${digest}`, { method: "HEAD" });
  return response.status;
}

async function layoutRoot(dir: string): Promise<string> {
  const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8")) as { manifests: Array<{ digest: string }> };
  assert.equal(index.manifests.length, 1);
  return index.manifests[0]!.digest;
}

const targets: Array<[string, () => Promise<Target>, string | false]> = [
  ["Ferry", startFerry, false],
  ["Ferry on S3 (ferry serve, Ceph RGW)", startFerryServeOnS3Target, skipUnlessS3()],
  ["distribution (reference registry)", () => startDistribution(), skipUnless("docker-registry")],
];

for (const [label, start, skip] of targets) {
  describe(`client against ${label}`, { skip }, () => {
    let target: Target;
    let foreign: ForeignServer;
    let work: string;
    let image: TestImage;

    before(async () => {
      target = await start();
      foreign = await startForeignServer();
      work = await tempDir();
      image = await buildImage({ layers: [{ "a.txt": "layer one\n" }, { "b.bin": randomBytes(300_000) }] });
      await writeLayout(join(work, "src"), [{ tag: "v1", image }]);
    });
    after(async () => {
      await target.close();
      await foreign.close();
    });

    test("push from an OCI layout keeps the manifest bytes and digest; pull brings back every blob", async () => {
      const push = await ferry(["push", `oci:${join(work, "src")}:v1`, `${target.host}/app/one:v1`]);
      assert.equal(push.code, 0, push.stderr);
      assert.equal(push.stdout.trim(), image.manifestDigest);
      assert.deepEqual(await getManifest(target, "app/one", "v1"), image.manifest);

      const out = join(work, "pulled");
      const pull = await ferry(["pull", "--jobs", "2", `${target.host}/app/one:v1`, `oci:${out}:v1`]);
      assert.equal(pull.code, 0, pull.stderr);
      assert.equal(await layoutRoot(out), image.manifestDigest);
      assert.deepEqual(await readBlob(out, image.manifestDigest), image.manifest);
      for (const blob of [image.config, ...image.layers]) assert.deepEqual(await readBlob(out, blob.digest), blob.bytes);
      // Pushing again finds everything in place.
      const again = await ferry(["push", "--json", `oci:${join(work, "src")}:v1`, `${target.host}/app/one:v1`]);
      assert.equal(again.code, 0, again.stderr);
      const result = JSON.parse(again.stdout.trim().split("\n").at(-1)!) as { blobs: { exists: number; copied: number } };
      assert.equal(result.blobs.copied, 0);
      assert.equal(result.blobs.exists, 3);
    });

    test("a multi-platform index is pushed whole, and pulled whole or for one --platform", async () => {
      const amd = await buildImage({ architecture: "amd64", layers: [{ "amd.txt": "amd64\n" }] });
      const arm = await buildImage({ architecture: "arm64", layers: [{ "arm.txt": "arm64\n" }] });
      const dir = join(work, "multi");
      const { index, digest } = await writeIndexLayout(dir, "v1", [
        { image: amd, platform: { os: "linux", architecture: "amd64" } },
        { image: arm, platform: { os: "linux", architecture: "arm64", variant: "v8" } },
      ]);
      const push = await ferry(["push", `oci:${dir}:v1`, `${target.host}/app/multi:v1`]);
      assert.equal(push.code, 0, push.stderr);
      assert.equal(push.stdout.trim(), digest);
      assert.deepEqual(await getManifest(target, "app/multi", "v1"), index);
      assert.deepEqual(await getManifest(target, "app/multi", arm.manifestDigest), arm.manifest);

      const whole = join(work, "multi-whole");
      assert.equal((await ferry(["pull", `${target.host}/app/multi:v1`, `oci:${whole}`])).code, 0);
      assert.equal(await layoutRoot(whole), digest);
      assert.deepEqual(await readBlob(whole, amd.layers[0]!.digest), amd.layers[0]!.bytes);

      const one = join(work, "multi-arm");
      const pull = await ferry(["pull", "--platform", "linux/arm64", `${target.host}/app/multi:v1`, `oci:${one}:arm`]);
      assert.equal(pull.code, 0, pull.stderr);
      assert.equal(pull.stdout.trim(), arm.manifestDigest);
      assert.equal(await layoutRoot(one), arm.manifestDigest);
      await assert.rejects(readBlob(one, amd.layers[0]!.digest), "the other platform's layer is not pulled");

      const none = await ferry(["pull", "--platform", "linux/s390x", `${target.host}/app/multi:v1`, `oci:${join(work, "none")}`]);
      assert.equal(none.code, 3, "exit code 3: not found");
      assert.match(none.stderr, /no manifest for platform linux\/s390x.*linux\/amd64, linux\/arm64\/v8/);
    });

    test("docker-archive: push a docker save tarball, pull it back into one, push that again to the same digest", async () => {
      const layers = [await tarLayer("x.txt", Buffer.from("docker archive layer\n")), await tarLayer("y.bin", randomBytes(50_000))];
      const file = join(work, "saved.tar");
      const { config } = await writeDockerArchive(file, layers, ["example/app:latest"]);
      const push = await ferry(["push", `docker-archive:${file}`, `${target.host}/app/archive:v1`]);
      assert.equal(push.code, 0, push.stderr);
      const manifest = JSON.parse((await getManifest(target, "app/archive", "v1")).toString()) as {
        mediaType: string;
        config: { digest: string };
        layers: Array<{ digest: string; mediaType: string }>;
      };
      assert.equal(manifest.mediaType, "application/vnd.docker.distribution.manifest.v2+json");
      assert.equal(manifest.config.digest, sha256(config));
      assert.deepEqual(manifest.layers.map((l) => l.digest), layers.map((l) => sha256(l)));
      assert.equal(await blobStatus(target, "app/archive", sha256(layers[1]!)), 200);

      const out = join(work, "pulled.tar");
      const pull = await ferry(["pull", `${target.host}/app/archive:v1`, `docker-archive:${out}`]);
      assert.equal(pull.code, 0, pull.stderr);
      const again = await ferry(["push", `docker-archive:${out}`, `${target.host}/app/archive2:v1`]);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(again.stdout.trim(), push.stdout.trim(), "the archive round trip preserves config and layers");
    });

    test("foreign layers: not uploaded on push (with a notice), pulled from their URLs in order, skipping hosts that are down or lie", async () => {
      const foreignImage = await buildImage({
        layers: [{ "base.txt": "base\n" }],
        foreign: [{ files: { "licensed.bin": randomBytes(40_000) }, urls: [] }],
      });
      const layer = foreignImage.layers[1]!;
      const urls = [await deadUrl("gone"), foreign.add("lying", layer.bytes, "lie"), foreign.add("good", layer.bytes)];
      const withUrls = await buildImageWithUrls(foreignImage, urls);
      await writeLayout(join(work, "foreign"), [{ tag: "v1", image: withUrls }]);

      const push = await ferry(["push", `oci:${join(work, "foreign")}:v1`, `${target.host}/app/foreign:v1`]);
      assert.equal(push.code, 0, push.stderr);
      assert.equal(push.stdout.trim(), withUrls.manifestDigest, "the manifest is pushed unchanged");
      assert.match(push.stderr, new RegExp(`notice: foreign layer ${layer.digest} \\(\\d+ bytes\\) not uploaded`));
      assert.equal(await blobStatus(target, "app/foreign", layer.digest), 404, "the foreign layer's bytes were not uploaded");
      assert.deepEqual(await getManifest(target, "app/foreign", "v1"), withUrls.manifest);

      const out = join(work, "foreign-pulled");
      const before = foreign.requests.length;
      const pull = await ferry(["pull", `${target.host}/app/foreign:v1`, `oci:${out}`]);
      assert.equal(pull.code, 0, pull.stderr);
      assert.deepEqual(await readBlob(out, layer.digest), layer.bytes);
      assert.match(pull.stderr, new RegExp(`${escape(urls[0]!)}: .*(ECONNREFUSED|connect)`));
      assert.match(pull.stderr, new RegExp(`${escape(urls[1]!)}: digest mismatch`));
      const hits = foreign.requests.slice(before).map((r) => r.path);
      assert.deepEqual(hits, ["/blob/lying", "/blob/good"], "URLs are tried in order, and only until one works");

      const check = await ferry(["foreign", "check", `${target.host}/app/foreign:v1`]);
      assert.equal(check.code, 0, check.stdout);
      assert.match(check.stdout, new RegExp(`${escape(urls[0]!)}: FAILED`));
      assert.match(check.stdout, new RegExp(`${escape(urls[2]!)}: ok ${layer.size} bytes`));
      const verify = await ferry(["foreign", "check", "--verify", "--json", `${target.host}/app/foreign:v1`]);
      const report = JSON.parse(verify.stdout) as Array<{ urls: Array<{ url: string; ok: boolean; error?: string }> }>;
      assert.deepEqual(report[0]!.urls.map((u) => u.ok), [false, false, true]);
      assert.match(report[0]!.urls[1]!.error!, /digest mismatch/);
    });

    test("a foreign layer no source can deliver fails the pull with every URL and its failure", async () => {
      const base = await buildImage({ foreign: [{ files: { "gone.bin": randomBytes(10_000) }, urls: [] }] });
      const layer = base.layers[1]!;
      const urls = [await deadUrl("down"), foreign.add("missing", layer.bytes, "missing"), foreign.add("short", layer.bytes, "truncate")];
      const img = await buildImageWithUrls(base, urls);
      await writeLayout(join(work, "unavailable"), [{ tag: "v1", image: img }]);
      assert.equal((await ferry(["push", `oci:${join(work, "unavailable")}:v1`, `${target.host}/app/unavailable:v1`])).code, 0);
      const pull = await ferry(["pull", "-q", `${target.host}/app/unavailable:v1`, `oci:${join(work, "unavailable-out")}`]);
      assert.equal(pull.code, 1);
      assert.match(pull.stderr, new RegExp(`blob ${layer.digest} .* could not be fetched from any source`));
      assert.match(pull.stderr, new RegExp(`${escape(urls[0]!)}: `));
      assert.match(pull.stderr, new RegExp(`${escape(urls[1]!)}: HTTP 404`));
      assert.match(pull.stderr, new RegExp(`${escape(urls[2]!)}: `));
      assert.match(pull.stderr, /registry 127\.0\.0\.1:\d+\/app\/unavailable: .*404/);
      const check = await ferry(["foreign", "check", `${target.host}/app/unavailable:v1`]);
      assert.equal(check.code, 1, "foreign check fails when a layer has no working URL");
    });

    test("--include-foreign uploads foreign bytes as a regular layer, says the manifest changed and prints the new digest", async () => {
      const base = await buildImage({ foreign: [{ files: { "mirror.bin": randomBytes(20_000) }, urls: [] }] });
      const layer = base.layers[1]!;
      const img = await buildImageWithUrls(base, [foreign.add("mirror", layer.bytes)]);
      await writeLayout(join(work, "mirror-src"), [{ tag: "v1", image: img }]);
      assert.equal((await ferry(["push", `oci:${join(work, "mirror-src")}:v1`, `${target.host}/app/upstream:v1`])).code, 0);

      const copy = await ferry(["copy", "--include-foreign", `${target.host}/app/upstream:v1`, `${target.host}/app/airgapped:v1`]);
      assert.equal(copy.code, 0, copy.stderr);
      const digest = copy.stdout.trim();
      assert.notEqual(digest, img.manifestDigest);
      assert.match(copy.stderr, new RegExp(`manifest changed from ${img.manifestDigest} to ${digest}`));
      const bytes = await getManifest(target, "app/airgapped", "v1");
      assert.equal(sha256(bytes), digest);
      const manifest = JSON.parse(bytes.toString()) as { layers: Array<{ mediaType: string; urls?: string[]; digest: string }> };
      assert.equal(manifest.layers[1]!.mediaType, "application/vnd.oci.image.layer.v1.tar+gzip");
      assert.equal(manifest.layers[1]!.urls, undefined);
      assert.equal(await blobStatus(target, "app/airgapped", layer.digest), 200);
    });

    test("copy within one registry mounts blobs across repositories and keeps the digest", async () => {
      const copy = await ferry(["copy", "--json", `${target.host}/app/one:v1`, `${target.host}/app/mounted:v2`]);
      assert.equal(copy.code, 0, copy.stderr);
      const lines = copy.stdout.trim().split("\n").map((l) => JSON.parse(l) as { type: string; outcome?: string; digest: string });
      const outcomes = lines.filter((e) => e.type === "blob-done").map((e) => e.outcome);
      assert.deepEqual(outcomes.sort(), ["mounted", "mounted", "mounted"]);
      assert.equal(lines.at(-1)!.digest, image.manifestDigest);
      assert.deepEqual(await getManifest(target, "app/mounted", "v2"), image.manifest);
    });

    test("copy from a registry into an OCI layout and back to a new repository", async () => {
      const dir = join(work, "via-layout");
      assert.equal((await ferry(["copy", `${target.host}/app/one:v1`, `oci:${dir}:x`])).code, 0);
      const back = await ferry(["copy", `oci:${dir}:x`, `docker://${target.host}/other/repo:x`]);
      assert.equal(back.code, 0, back.stderr);
      assert.equal(back.stdout.trim(), image.manifestDigest);
    });

    test("inspect, tags, catalog and rm", async () => {
      const inspect = await ferry(["inspect", `${target.host}/app/one:v1`]);
      assert.equal(inspect.code, 0, inspect.stderr);
      assert.match(inspect.stdout, new RegExp(`Digest:\\s+${image.manifestDigest}`));
      for (const layer of image.layers) assert.match(inspect.stdout, new RegExp(`${layer.digest}\\s+.*\\(${layer.size} bytes\\)`));
      const raw = await ferry(["inspect", "--raw", `${target.host}/app/one:v1`]);
      assert.equal(raw.stdout, image.manifest.toString());

      const foreignInspect = await ferry(["inspect", `${target.host}/app/foreign:v1`]);
      assert.match(foreignInspect.stdout, /foreign: http:\/\/127\.0\.0\.1:\d+\/blob\/good/);

      assert.equal((await ferry(["push", "-q", `oci:${join(work, "src")}:v1`, `${target.host}/app/one:v2`])).code, 0);
      const tags = await ferry(["tags", `${target.host}/app/one`]);
      assert.deepEqual(tags.stdout.trim().split("\n").sort(), ["v1", "v2"]);
      const catalog = await ferry(["catalog", "--json", target.host]);
      const repositories = (JSON.parse(catalog.stdout) as { Registry: string; Repositories: string[] }).Repositories;
      assert.ok(repositories.includes("app/one") && repositories.includes("app/multi"), catalog.stdout);

      const rm = await ferry(["rm", `${target.host}/app/archive2:v1`]);
      assert.equal(rm.code, 0, rm.stderr);
      const gone = await fetch(`${target.url}/v2/app/archive2/manifests/v1`, { headers: { accept: ACCEPT } });
      assert.equal(gone.status, 404);
      const missing = await ferry(["inspect", `${target.host}/app/nothing:v1`]);
      assert.equal(missing.code, 3, "exit code 3: not found");
      assert.match(missing.stderr, /(image not found: 127\.0\.0\.1:\d+\/app\/nothing has no such tag or digest|repository app\/nothing not found on 127\.0\.0\.1:\d+)/);
    });
  });
}

/** Rebuilds a test image with `urls` on its foreign layer (the manifest changes, so its digest too). */
async function buildImageWithUrls(image: TestImage, urls: string[]): Promise<TestImage> {
  const manifest = JSON.parse(image.manifest.toString()) as { layers: Array<{ urls?: string[] }> };
  const layers = image.layers.map((l) => (l.urls ? { ...l, urls } : l));
  manifest.layers = manifest.layers.map((l) => (l.urls ? { ...l, urls } : l));
  const bytes = Buffer.from(JSON.stringify(manifest, null, 2));
  return { ...image, layers, manifest: bytes, manifestDigest: sha256(bytes) };
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
