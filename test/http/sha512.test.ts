/**
 * sha512 content end to end (distribution-spec main; image-spec "Digests":
 * sha512 is a registered algorithm, "encoded portion MUST match /[a-f0-9]{128}/").
 *
 * - "When pushing a blob with a digest algorithm other than sha256, the post
 *   request SHOULD include the digest-algorithm parameter:
 *   /v2/<name>/blobs/uploads/?digest-algorithm=<algorithm>" (end-4c: 201/202,
 *   failure 404/400).
 * - Docker-Content-Digest "MUST be equal to the client provided digest" for
 *   manifests, so content addressed by sha512 stays addressed by sha512: blobs,
 *   manifests whose descriptors are sha512, indexes, mounts and referrers.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, expectError, putManifest, req, resolveLocation, sha512, uid, withQuery } from "./client.js";

let reg: TestRegistry;
before(async () => {
  reg = await startTestRegistry();
});
after(async () => {
  await reg?.close();
});

function descriptor512(mediaType: string, bytes: Buffer, extra: Record<string, unknown> = {}) {
  return { mediaType, digest: sha512(bytes), size: bytes.length, ...extra };
}

async function post(repo: string, query: string): Promise<Response> {
  return req(`${reg.url}/v2/${repo}/blobs/uploads/${query}`, { method: "POST", headers: { "Content-Length": "0" } });
}

/** Chunked push announced with digest-algorithm=sha512: POST, two PATCHes, closing PUT. */
async function pushBlob512(repo: string, data: Buffer): Promise<string> {
  const started = await post(repo, "?digest-algorithm=sha512");
  assert.equal(started.status, 202, await started.clone().text());
  let url = resolveLocation(reg.url, started);
  const half = Math.floor(data.length / 2);
  for (const [from, part] of [
    [0, data.subarray(0, half)],
    [half, data.subarray(half)],
  ] as const) {
    const res = await req(url, {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream", "Content-Range": `${from}-${from + part.length - 1}`, "Content-Length": String(part.length) },
      body: new Uint8Array(part),
    });
    assert.equal(res.status, 202, await res.clone().text());
    url = resolveLocation(reg.url, res);
  }
  const digest = sha512(data);
  const done = await req(withQuery(url, { digest }), { method: "PUT", headers: { "Content-Length": "0" } });
  assert.equal(done.status, 201, await done.clone().text());
  assert.equal(done.headers.get("docker-content-digest"), digest);
  return digest;
}

async function blob(repo: string, digest: string, method = "GET"): Promise<Response> {
  return req(`${reg.url}/v2/${repo}/blobs/${digest}`, { method });
}

async function manifest(repo: string, reference: string, method = "GET"): Promise<Response> {
  return req(`${reg.url}/v2/${repo}/manifests/${reference}`, { method, headers: { Accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } });
}

describe("blob uploads with digest-algorithm", () => {
  it("digest-algorithm=sha512 opens a session; chunks and a sha512 PUT store a blob served under its sha512 digest", async () => {
    const repo = uid("s512/");
    const data = randomBytes(300_000);
    const digest = await pushBlob512(repo, data);
    const head = await blob(repo, digest, "HEAD");
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("docker-content-digest"), digest);
    assert.equal(head.headers.get("content-length"), String(data.length));
    const got = await blob(repo, digest);
    assert.equal(got.status, 200);
    assert.ok(Buffer.from(await got.arrayBuffer()).equals(data));
  });

  it("digest-algorithm=sha256 is accepted too (the default, named)", async () => {
    const res = await post(uid("s512/"), "?digest-algorithm=sha256");
    assert.equal(res.status, 202, await res.clone().text());
  });

  for (const [what, value] of [
    ["md5", "md5"],
    ["sha384 (syntactically fine, not supported)", "sha384"],
    ["empty", ""],
    ["upper case", "SHA512"],
    ["a path", "..%2F..%2Fetc"],
  ] as const) {
    it(`digest-algorithm ${what} answers 400 DIGEST_INVALID before any byte is sent, and opens no session`, async () => {
      const res = await post(uid("s512/"), `?digest-algorithm=${value}`);
      assert.equal(res.headers.get("location"), null, "no session was opened");
      await expectError(res, 400, "DIGEST_INVALID");
    });
  }

  it("a monolithic POST ?digest=sha512:… stores the blob", async () => {
    const repo = uid("s512/");
    const data = randomBytes(5000);
    const digest = sha512(data);
    const res = await req(`${reg.url}/v2/${repo}/blobs/uploads/?digest-algorithm=sha512&digest=${digest}`, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: new Uint8Array(data),
    });
    assert.equal(res.status, 201, await res.clone().text());
    assert.equal(res.headers.get("docker-content-digest"), digest);
    assert.equal((await blob(repo, digest, "HEAD")).status, 200);
  });

  it("a sha512 blob mounts from another repository under its sha512 digest", async () => {
    const from = uid("s512/");
    const to = uid("s512/");
    const digest = await pushBlob512(from, randomBytes(1000));
    const res = await post(to, `?mount=${digest}&from=${from}`);
    assert.equal(res.status, 201, await res.clone().text());
    assert.equal(res.headers.get("docker-content-digest"), digest);
    assert.equal((await blob(to, digest, "HEAD")).status, 200);
  });
});

describe("manifests over sha512 content", () => {
  async function image512(repo: string, extra: Record<string, unknown> = {}) {
    const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", seed: randomBytes(4).toString("hex") }));
    const layer = randomBytes(2048);
    await pushBlob512(repo, config);
    await pushBlob512(repo, layer);
    const bytes = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor512(OCI_CONFIG, config), layers: [descriptor512(OCI_LAYER, layer)], ...extra }),
    );
    return { bytes, digest: sha512(bytes) };
  }

  it("an image whose descriptors are sha512, pushed by its sha512 digest, is served with that digest", async () => {
    const repo = uid("s512/");
    const image = await image512(repo);
    const res = await putManifest(reg.url, repo, image.digest, image.bytes, OCI_MANIFEST);
    assert.equal(res.status, 201, await res.clone().text());
    assert.equal(res.headers.get("docker-content-digest"), image.digest);
    const got = await manifest(repo, image.digest);
    assert.equal(got.status, 200);
    assert.equal(got.headers.get("docker-content-digest"), image.digest);
    assert.ok(Buffer.from(await got.arrayBuffer()).equals(image.bytes));
  });

  it("a sha512 descriptor naming a blob the repository lacks answers MANIFEST_BLOB_UNKNOWN with that digest", async () => {
    const repo = uid("s512/");
    const config = Buffer.from("{}");
    await pushBlob512(repo, config);
    const missing = randomBytes(64);
    const bytes = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor512(OCI_CONFIG, config), layers: [descriptor512(OCI_LAYER, missing)] }),
    );
    const errors = await expectError(await putManifest(reg.url, repo, sha512(bytes), bytes, OCI_MANIFEST), 400, "MANIFEST_BLOB_UNKNOWN");
    assert.deepEqual(errors[0]!.detail, { digest: sha512(missing), mediaType: OCI_LAYER });
  });

  it("an index lists a manifest by its sha512 digest; pulling the index by tag answers the pushed digest", async () => {
    const repo = uid("s512/");
    const image = await image512(repo);
    assert.equal((await putManifest(reg.url, repo, image.digest, image.bytes, OCI_MANIFEST)).status, 201);
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [descriptor512(OCI_MANIFEST, image.bytes)] }));
    const res = await req(`${reg.url}/v2/${repo}/manifests/${sha512(index)}?tag=multi`, {
      method: "PUT",
      headers: { "Content-Type": OCI_INDEX },
      body: new Uint8Array(index),
    });
    assert.equal(res.status, 201, await res.clone().text());
    const byTag = await manifest(repo, "multi", "HEAD");
    assert.equal(byTag.headers.get("docker-content-digest"), sha512(index));
  });

  it("a referrer whose subject is a sha512 manifest is listed by /referrers/<sha512> and answers OCI-Subject", async () => {
    const repo = uid("s512/");
    const image = await image512(repo);
    assert.equal((await putManifest(reg.url, repo, image.digest, image.bytes, OCI_MANIFEST)).status, 201);
    const empty = Buffer.from("{}");
    await pushBlob512(repo, empty);
    const referrer = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        artifactType: "application/vnd.example.sbom",
        config: descriptor512(OCI_EMPTY, empty),
        layers: [descriptor512(OCI_EMPTY, empty)],
        subject: descriptor512(OCI_MANIFEST, image.bytes),
      }),
    );
    const pushed = await putManifest(reg.url, repo, sha512(referrer), referrer, OCI_MANIFEST);
    assert.equal(pushed.status, 201, await pushed.clone().text());
    assert.equal(pushed.headers.get("oci-subject"), image.digest);
    const listed = await req(`${reg.url}/v2/${repo}/referrers/${image.digest}`);
    assert.equal(listed.status, 200);
    const body = (await listed.json()) as { manifests: Array<{ digest: string; artifactType?: string }> };
    assert.deepEqual(
      body.manifests.map((m) => [m.digest, m.artifactType]),
      [[sha512(referrer), "application/vnd.example.sbom"]],
    );
  });
});
