/**
 * distribution-spec 1.1 "Pulling manifests", "Pushing Manifests",
 * "Deleting tags/manifests", with the four manifest types of image-spec 1.1
 * and Docker image manifest v2 schema 2.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import {
  DOCKER_FOREIGN,
  DOCKER_LIST,
  DOCKER_MANIFEST,
  EMPTY_JSON,
  OCI_CONFIG,
  OCI_EMPTY,
  OCI_INDEX,
  OCI_LAYER,
  OCI_MANIFEST,
  OCI_NONDIST,
  descriptor,
  expectError,
  makeImage,
  pushBlob,
  pushManifest,
  putManifest,
  req,
  resolveLocation,
  sha256,
  uid,
} from "./client.js";

let reg: TestRegistry;
before(async () => {
  reg = await startTestRegistry();
});
after(async () => {
  await reg?.close();
});

const ACCEPT = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");

async function getManifest(repo: string, reference: string, method = "GET"): Promise<Response> {
  return req(`${reg.url}/v2/${repo}/manifests/${reference}`, { method, headers: { Accept: ACCEPT } });
}

/** Pretty-printed with unusual spacing, so a server that re-serializes is caught. */
function oddJson(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value, null, 3).replace(/\n/g, "\r\n") + "\n\n");
}

async function assertServed(repo: string, reference: string, pushed: { bytes: Buffer; digest: string; mediaType: string }) {
  // "A GET request to an existing manifest URL MUST provide the expected manifest, with a response code that MUST be 200 OK."
  // "The registry MUST store the manifest exactly as provided" / Content-Type is the type it was pushed with.
  const res = await getManifest(repo, reference);
  assert.equal(res.status, 200, `GET ${repo}:${reference}`);
  const body = Buffer.from(await res.arrayBuffer());
  assert.ok(body.equals(pushed.bytes), "GET returns the pushed bytes exactly");
  assert.equal(res.headers.get("content-type"), pushed.mediaType);
  assert.equal(res.headers.get("docker-content-digest"), pushed.digest);
  assert.equal(res.headers.get("content-length"), String(pushed.bytes.length));
  const head = await getManifest(repo, reference, "HEAD");
  assert.equal(head.status, 200, `HEAD ${repo}:${reference}`);
  assert.equal(head.headers.get("content-type"), pushed.mediaType);
  assert.equal(head.headers.get("docker-content-digest"), pushed.digest);
  assert.equal(head.headers.get("content-length"), String(pushed.bytes.length));
  assert.equal((await head.arrayBuffer()).byteLength, 0, "HEAD has no body");
}

describe("pushing and pulling the four manifest types", () => {
  it("OCI image manifest: PUT by tag → 201 with Location and Docker-Content-Digest; GET/HEAD by tag and digest byte-identical", async () => {
    // "Upon successful upload: The registry MUST return 201 Created. The response MUST include Location"
    const repo = uid("m/");
    const manifest = await makeImage(reg.url, repo);
    const bytes = oddJson(manifest);
    const pushed = await pushManifest(reg.url, repo, "v1", bytes, OCI_MANIFEST);
    assert.equal(pushed.res.headers.get("docker-content-digest"), pushed.digest);
    const location = resolveLocation(reg.url, pushed.res);
    const viaLocation = await req(location, { headers: { Accept: ACCEPT } });
    assert.equal(viaLocation.status, 200, "Location is a pullable manifest URL");
    assert.ok(Buffer.from(await viaLocation.arrayBuffer()).equals(bytes));
    await assertServed(repo, "v1", pushed);
    await assertServed(repo, pushed.digest, pushed);
  });

  it("OCI image index with OCI children", async () => {
    const repo = uid("m/");
    const a = await pushManifest(reg.url, repo, "amd64", await makeImage(reg.url, repo), OCI_MANIFEST);
    const b = await pushManifest(reg.url, repo, "arm64", await makeImage(reg.url, repo), OCI_MANIFEST);
    const index = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        descriptor(OCI_MANIFEST, a.bytes, { platform: { architecture: "amd64", os: "linux" } }),
        descriptor(OCI_MANIFEST, b.bytes, { platform: { architecture: "arm64", os: "linux" } }),
      ],
    };
    const pushed = await pushManifest(reg.url, repo, "multi", oddJson(index), OCI_INDEX);
    await assertServed(repo, "multi", pushed);
    await assertServed(repo, pushed.digest, pushed);
  });

  it("Docker image manifest v2 schema 2", async () => {
    const repo = uid("m/");
    const manifest = await makeImage(reg.url, repo, { mediaType: DOCKER_MANIFEST });
    const pushed = await pushManifest(reg.url, repo, "docker", oddJson(manifest), DOCKER_MANIFEST);
    await assertServed(repo, "docker", pushed);
    await assertServed(repo, pushed.digest, pushed);
  });

  it("Docker manifest list with Docker children", async () => {
    const repo = uid("m/");
    const child = await pushManifest(reg.url, repo, "c1", await makeImage(reg.url, repo, { mediaType: DOCKER_MANIFEST }), DOCKER_MANIFEST);
    const list = {
      schemaVersion: 2,
      mediaType: DOCKER_LIST,
      manifests: [descriptor(DOCKER_MANIFEST, child.bytes, { platform: { architecture: "amd64", os: "linux" } })],
    };
    const pushed = await pushManifest(reg.url, repo, "list", oddJson(list), DOCKER_LIST);
    await assertServed(repo, "list", pushed);
  });

  it("an OCI manifest without a mediaType field is served with the Content-Type it was pushed with", async () => {
    const repo = uid("m/");
    const manifest = await makeImage(reg.url, repo);
    delete manifest.mediaType;
    const pushed = await pushManifest(reg.url, repo, "nomt", manifest, OCI_MANIFEST);
    await assertServed(repo, "nomt", pushed);
  });

  it("Content-Type parameters are ignored on PUT (Registries SHOULD ignore any parameters)", async () => {
    const repo = uid("m/");
    const manifest = await makeImage(reg.url, repo);
    const res = await putManifest(reg.url, repo, "params", manifest, `${OCI_MANIFEST}; charset=utf-8`);
    assert.equal(res.status, 201, await res.clone().text());
    const got = await getManifest(repo, "params");
    assert.equal(got.headers.get("content-type")?.split(";")[0], OCI_MANIFEST);
    await got.arrayBuffer();
  });

  it("PUT by digest: 201 when the digest matches, and the manifest is not tagged", async () => {
    const repo = uid("m/");
    const bytes = oddJson(await makeImage(reg.url, repo));
    const pushed = await pushManifest(reg.url, repo, sha256(bytes), bytes, OCI_MANIFEST);
    assert.equal(pushed.res.headers.get("docker-content-digest"), sha256(bytes));
    await assertServed(repo, pushed.digest, pushed);
  });

  it("PUT by digest with a digest that does not match the body answers 400 DIGEST_INVALID", async () => {
    // Docker-Content-Digest "MUST match the digest provided by the client"; DIGEST_INVALID: "provided digest did not match uploaded content".
    const repo = uid("m/");
    const bytes = Buffer.from(JSON.stringify(await makeImage(reg.url, repo)));
    const wrong = sha256(randomBytes(10));
    await expectError(await putManifest(reg.url, repo, wrong, bytes, OCI_MANIFEST), 400, "DIGEST_INVALID");
    assert.equal((await getManifest(repo, wrong)).status, 404);
    assert.equal((await getManifest(repo, sha256(bytes))).status, 404, "nothing was stored");
  });

  it("PUT by a sha512 digest that matches is accepted and pullable by it", async () => {
    const repo = uid("m/");
    const bytes = Buffer.from(JSON.stringify(await makeImage(reg.url, repo)));
    const { createHash } = await import("node:crypto");
    const d512 = `sha512:${createHash("sha512").update(bytes).digest("hex")}`;
    const res = await putManifest(reg.url, repo, d512, bytes, OCI_MANIFEST);
    assert.equal(res.status, 201, await res.clone().text());
    const got = await getManifest(repo, d512);
    assert.equal(got.status, 200);
    assert.ok(Buffer.from(await got.arrayBuffer()).equals(bytes));
  });

  it("re-pushing a tag moves it to the new manifest", async () => {
    const repo = uid("m/");
    const first = await pushManifest(reg.url, repo, "moving", await makeImage(reg.url, repo), OCI_MANIFEST);
    const second = await pushManifest(reg.url, repo, "moving", await makeImage(reg.url, repo), OCI_MANIFEST);
    await assertServed(repo, "moving", second);
    await assertServed(repo, first.digest, first);
  });
});

describe("manifest validation on PUT", () => {
  it("Content-Type that disagrees with the body's mediaType answers 400 MANIFEST_INVALID", async () => {
    // "If a manifest includes a mediaType field, clients MUST set Content-Type to exactly that value."
    const repo = uid("v/");
    const manifest = await makeImage(reg.url, repo);
    await expectError(await putManifest(reg.url, repo, "x", manifest, DOCKER_MANIFEST), 400, "MANIFEST_INVALID");
    await expectError(await putManifest(reg.url, repo, "x", manifest, OCI_INDEX), 400, "MANIFEST_INVALID");
    assert.equal((await getManifest(repo, "x")).status, 404);
  });

  it("missing config and layer answer 400 MANIFEST_BLOB_UNKNOWN listing each missing digest", async () => {
    // "When a manifest is rejected for this reason, the registry MUST return one or more MANIFEST_BLOB_UNKNOWN errors."
    const repo = uid("v/");
    await pushBlob(reg.url, repo, "present");
    const config = Buffer.from(`{"missing":"config-${randomBytes(4).toString("hex")}"}`);
    const layer = randomBytes(100);
    const manifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: descriptor(OCI_CONFIG, config),
      layers: [descriptor(OCI_LAYER, layer)],
    };
    const errors = await expectError(await putManifest(reg.url, repo, "t", manifest, OCI_MANIFEST), 400, "MANIFEST_BLOB_UNKNOWN");
    const text = JSON.stringify(errors);
    assert.ok(text.includes(sha256(config)), "the missing config digest is named");
    assert.ok(text.includes(sha256(layer)), "the missing layer digest is named");
    assert.ok(errors.every((e) => e.code === "MANIFEST_BLOB_UNKNOWN"), `all entries MANIFEST_BLOB_UNKNOWN: ${text}`);
    assert.ok(errors.length >= 2, "one error per missing blob");
    assert.equal((await getManifest(repo, "t")).status, 404);
  });

  it("a blob present in another repository does not satisfy a manifest here", async () => {
    const other = uid("v/");
    const repo = uid("v/");
    const manifest = await makeImage(reg.url, other);
    await pushBlob(reg.url, repo, "something");
    await expectError(await putManifest(reg.url, repo, "t", manifest, OCI_MANIFEST), 400, "MANIFEST_BLOB_UNKNOWN");
  });

  it("an index with a missing child manifest answers 400 MANIFEST_BLOB_UNKNOWN", async () => {
    const repo = uid("v/");
    const present = await pushManifest(reg.url, repo, "p", await makeImage(reg.url, repo), OCI_MANIFEST);
    const ghost = Buffer.from(JSON.stringify({ schemaVersion: 2, ghost: randomBytes(4).toString("hex") }));
    const index = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [descriptor(OCI_MANIFEST, present.bytes), descriptor(OCI_MANIFEST, ghost)],
    };
    const errors = await expectError(await putManifest(reg.url, repo, "idx", index, OCI_INDEX), 400, "MANIFEST_BLOB_UNKNOWN");
    assert.ok(JSON.stringify(errors).includes(sha256(ghost)), "the missing child is named");
    assert.ok(!JSON.stringify(errors).includes(present.digest), "the present child is not reported");
  });

  it("invalid JSON answers 400 MANIFEST_INVALID", async () => {
    const repo = uid("v/");
    for (const body of ["{not json", "", "[]", "null", '"string"', '{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST + '"']) {
      await expectError(await putManifest(reg.url, repo, "bad", body, OCI_MANIFEST), 400, "MANIFEST_INVALID");
    }
  });

  it("structurally invalid manifests answer 400 MANIFEST_INVALID", async () => {
    const repo = uid("v/");
    const good = await makeImage(reg.url, repo);
    const cases: Array<[string, unknown]> = [
      ["schemaVersion 1", { ...good, schemaVersion: 1 }],
      ["schemaVersion missing", { ...good, schemaVersion: undefined }],
      ["config missing", { ...good, config: undefined }],
      ["config digest invalid", { ...good, config: { mediaType: OCI_CONFIG, digest: "sha256:zz", size: 2 } }],
      ["layer size negative", { ...good, layers: [{ mediaType: OCI_LAYER, digest: sha256("x"), size: -1 }] }],
      ["layers not an array", { ...good, layers: "nope" }],
      ["annotations not strings", { ...good, annotations: { a: 1 } }],
    ];
    for (const [what, manifest] of cases) {
      const res = await putManifest(reg.url, repo, "bad", manifest, OCI_MANIFEST);
      assert.equal(res.status, 400, `${what}: got ${res.status}`);
      await expectError(res, 400, ["MANIFEST_INVALID", "DIGEST_INVALID"]);
    }
  });

  it("an unknown manifest media type is refused with 4xx (MANIFEST_INVALID or UNSUPPORTED)", async () => {
    const repo = uid("v/");
    const res = await putManifest(reg.url, repo, "t", { schemaVersion: 2, config: {}, layers: [] }, "application/x-made-up+json");
    await expectError(res, [400, 415], ["MANIFEST_INVALID", "UNSUPPORTED"]);
  });

  it("a manifest over the 4 MiB default limit answers 413", async () => {
    // "If a manifest exceeds this limit, the registry SHOULD respond with 413 Payload Too Large"
    const repo = uid("v/");
    await pushBlob(reg.url, repo, EMPTY_JSON);
    const manifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: descriptor(OCI_EMPTY, EMPTY_JSON),
      layers: [],
      annotations: { pad: "x".repeat(4 * 1024 * 1024 + 10) },
    };
    const res = await putManifest(reg.url, repo, "big", manifest, OCI_MANIFEST);
    assert.equal(res.status, 413);
    await expectError(res, 413);
  });

  it("a manifest of exactly 4 MiB is accepted (SHOULD expect to support manifest uploads of at least 4 MiB)", async () => {
    const repo = uid("v/");
    await pushBlob(reg.url, repo, EMPTY_JSON);
    const base = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: descriptor(OCI_EMPTY, EMPTY_JSON),
      layers: [],
      annotations: { pad: "" },
    };
    const overhead = Buffer.byteLength(JSON.stringify(base));
    base.annotations.pad = "x".repeat(4 * 1024 * 1024 - overhead);
    const bytes = Buffer.from(JSON.stringify(base));
    assert.equal(bytes.length, 4 * 1024 * 1024);
    const res = await putManifest(reg.url, repo, "exact", bytes, OCI_MANIFEST);
    assert.equal(res.status, 201, `got ${res.status}`);
    await res.arrayBuffer();
  });

  it("a manifest with a subject that does not exist is accepted with an OCI-Subject header", async () => {
    // "A registry MUST accept a manifest that includes a subject field referencing another manifest that does not yet exist"
    // OCI-Subject tells the client the registry processed the subject.
    const repo = uid("v/");
    const subject = Buffer.from(JSON.stringify({ schemaVersion: 2, note: randomBytes(4).toString("hex") }));
    await pushBlob(reg.url, repo, EMPTY_JSON);
    const manifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: "application/vnd.example.sig",
      config: descriptor(OCI_EMPTY, EMPTY_JSON),
      layers: [descriptor(OCI_EMPTY, EMPTY_JSON)],
      subject: descriptor(OCI_MANIFEST, subject),
    };
    const res = await putManifest(reg.url, repo, sha256(JSON.stringify(manifest)), manifest, OCI_MANIFEST);
    assert.equal(res.status, 201, await res.clone().text());
    assert.equal(res.headers.get("oci-subject"), sha256(subject));
  });
});

describe("consistency between blobs and manifests", () => {
  it("a blob deleted before the manifest PUT no longer satisfies it (400 MANIFEST_BLOB_UNKNOWN)", async () => {
    const repo = uid("c/");
    const manifest = await makeImage(reg.url, repo);
    const layer = (manifest.layers as Array<{ digest: string }>)[0]!.digest;
    assert.equal((await req(`${reg.url}/v2/${repo}/blobs/${layer}`, { method: "DELETE" })).status, 202);
    const errors = await expectError(await putManifest(reg.url, repo, "t", manifest, OCI_MANIFEST), 400, "MANIFEST_BLOB_UNKNOWN");
    assert.ok(JSON.stringify(errors).includes(layer));
  });

  it("a manifest deleted by digest can be pushed again", async () => {
    const repo = uid("c/");
    const pushed = await pushManifest(reg.url, repo, "again", await makeImage(reg.url, repo), OCI_MANIFEST);
    assert.equal((await req(`${reg.url}/v2/${repo}/manifests/${pushed.digest}`, { method: "DELETE" })).status, 202);
    const again = await pushManifest(reg.url, repo, "again", pushed.bytes, OCI_MANIFEST);
    await assertServed(repo, "again", again);
  });

  it("a blob deleted and pushed again is readable again", async () => {
    const repo = uid("c/");
    const data = randomBytes(200);
    const digest = await pushBlob(reg.url, repo, data);
    assert.equal((await req(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: "DELETE" })).status, 202);
    await pushBlob(reg.url, repo, data);
    const res = await req(`${reg.url}/v2/${repo}/blobs/${digest}`);
    assert.equal(res.status, 200);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(data));
  });

  it("a PUT without Content-Type is accepted from the body's mediaType", async () => {
    const repo = uid("c/");
    const bytes = Buffer.from(JSON.stringify(await makeImage(reg.url, repo)));
    const res = await req(`${reg.url}/v2/${repo}/manifests/noct`, { method: "PUT", body: new Uint8Array(bytes) });
    assert.equal(res.status, 201, await res.clone().text());
    const got = await getManifest(repo, "noct");
    assert.equal(got.headers.get("content-type"), OCI_MANIFEST);
    assert.ok(Buffer.from(await got.arrayBuffer()).equals(bytes));
  });
});

describe("non-distributable (foreign) layers with urls", () => {
  let counter: Server;
  let hits = 0;
  let counterUrl: string;
  before(async () => {
    counter = createServer((request, response) => {
      hits++;
      response.writeHead(200, { "Content-Type": "application/octet-stream" });
      response.end("foreign bytes");
    });
    await new Promise<void>((resolve) => counter.listen(0, "127.0.0.1", resolve));
    counterUrl = `http://127.0.0.1:${(counter.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise<void>((resolve) => counter.close(() => resolve()));
  });

  for (const mediaType of [OCI_NONDIST, DOCKER_FOREIGN]) {
    it(`${mediaType}: accepted without the blob, nothing fetched, blob GET is 404 BLOB_UNKNOWN saying foreign with the urls`, async () => {
      const repo = uid("f/");
      const docker = mediaType === DOCKER_FOREIGN;
      const manifest = await makeImage(reg.url, repo, docker ? { mediaType: DOCKER_MANIFEST } : {});
      const foreignBytes = randomBytes(256);
      const url = `${counterUrl}/layers/${randomBytes(4).toString("hex")}.tar.gz`;
      const foreign = descriptor(mediaType, foreignBytes, { urls: [url] });
      (manifest.layers as unknown[]).push(foreign);
      const before = hits;
      const pushed = await pushManifest(reg.url, repo, "win", manifest, docker ? DOCKER_MANIFEST : OCI_MANIFEST);
      await assertServed(repo, "win", pushed);
      assert.equal(hits, before, "the registry fetched nothing from the layer URL on push");

      const res = await req(`${reg.url}/v2/${repo}/blobs/${foreign.digest}`);
      const errors = await expectError(res, 404, "BLOB_UNKNOWN");
      const entry = errors.find((e) => e.code === "BLOB_UNKNOWN")!;
      assert.match(entry.message ?? "", /foreign|non-distributable/i, "message says the layer is foreign");
      assert.ok(JSON.stringify(entry.detail ?? "").includes(url), `detail lists the URLs: ${JSON.stringify(entry.detail)}`);
      const head = await req(`${reg.url}/v2/${repo}/blobs/${foreign.digest}`, { method: "HEAD" });
      assert.equal(head.status, 404);
      assert.equal(hits, before, "the registry fetched nothing from the layer URL on GET/HEAD");
    });
  }

  it("a Docker foreign layer without urls and without the blob is refused with 400", async () => {
    const repo = uid("f/");
    const manifest = await makeImage(reg.url, repo, { mediaType: DOCKER_MANIFEST });
    (manifest.layers as unknown[]).push(descriptor(DOCKER_FOREIGN, randomBytes(10)));
    await expectError(await putManifest(reg.url, repo, "t", manifest, DOCKER_MANIFEST), 400, ["MANIFEST_INVALID", "MANIFEST_BLOB_UNKNOWN"]);
  });

  it("an ordinary layer with urls but no blob is accepted as foreign, without any fetch", async () => {
    // docs/federation.md: skopeo/podman never upload a layer whose descriptor has urls, whatever its
    // media type, and push the manifest unchanged; issue 3 lists "distributable layers that carry
    // urls but were not uploaded" among the foreign layers a manifest PUT must accept. A layer
    // WITHOUT urls and without a blob is still MANIFEST_BLOB_UNKNOWN (tested above).
    const repo = uid("f/");
    const manifest = await makeImage(reg.url, repo);
    const missing = descriptor(OCI_LAYER, randomBytes(10), { urls: [`${counterUrl}/x`] });
    (manifest.layers as unknown[]).push(missing);
    const before = hits;
    const pushed = await pushManifest(reg.url, repo, "t", manifest, OCI_MANIFEST);
    assert.equal(hits, before, "nothing may be fetched at push time by default");
    const res = await req(`${reg.url}/v2/${repo}/blobs/${missing.digest}`);
    assert.equal(res.status, 404);
    assert.match(await res.text(), /foreign/);
    await assertServed(repo, pushed.digest, pushed);
  });
});

describe("deleting manifests and tags", () => {
  it("DELETE by tag answers 202 and untags; the manifest stays reachable by digest", async () => {
    // "Upon success, the registry MUST respond with a 202 Accepted code." "Once deleted, a GET to /v2/<name>/manifests/<tag> will return a 404."
    const repo = uid("d/");
    const pushed = await pushManifest(reg.url, repo, "gone", await makeImage(reg.url, repo), OCI_MANIFEST);
    await pushManifest(reg.url, repo, "kept", pushed.bytes, OCI_MANIFEST);
    const res = await req(`${reg.url}/v2/${repo}/manifests/gone`, { method: "DELETE" });
    assert.equal(res.status, 202);
    await res.arrayBuffer();
    await expectError(await getManifest(repo, "gone"), 404, "MANIFEST_UNKNOWN");
    await assertServed(repo, pushed.digest, pushed);
    await assertServed(repo, "kept", pushed);
    const tags = await (await req(`${reg.url}/v2/${repo}/tags/list`)).json() as { tags: string[] };
    assert.deepEqual(tags.tags, ["kept"]);
  });

  it("DELETE by digest answers 202, then the manifest and every tag on it are 404 MANIFEST_UNKNOWN", async () => {
    // "Once deleted, a GET to /v2/<name>/manifests/<digest> and any tag pointing to that digest will return a 404."
    const repo = uid("d/");
    const pushed = await pushManifest(reg.url, repo, "a", await makeImage(reg.url, repo), OCI_MANIFEST);
    await pushManifest(reg.url, repo, "b", pushed.bytes, OCI_MANIFEST);
    const other = await pushManifest(reg.url, repo, "c", await makeImage(reg.url, repo), OCI_MANIFEST);
    const res = await req(`${reg.url}/v2/${repo}/manifests/${pushed.digest}`, { method: "DELETE" });
    assert.equal(res.status, 202);
    await res.arrayBuffer();
    await expectError(await getManifest(repo, pushed.digest), 404, "MANIFEST_UNKNOWN");
    await expectError(await getManifest(repo, "a"), 404, "MANIFEST_UNKNOWN");
    await expectError(await getManifest(repo, "b"), 404, "MANIFEST_UNKNOWN");
    assert.equal((await getManifest(repo, pushed.digest, "HEAD")).status, 404);
    const tags = await (await req(`${reg.url}/v2/${repo}/tags/list`)).json() as { tags: string[] };
    assert.deepEqual(tags.tags, ["c"]);
    await assertServed(repo, "c", other);
  });

  it("DELETE of an unknown tag or digest answers 404 MANIFEST_UNKNOWN", async () => {
    const repo = uid("d/");
    await pushManifest(reg.url, repo, "x", await makeImage(reg.url, repo), OCI_MANIFEST);
    await expectError(await req(`${reg.url}/v2/${repo}/manifests/nope`, { method: "DELETE" }), 404, "MANIFEST_UNKNOWN");
    await expectError(await req(`${reg.url}/v2/${repo}/manifests/${sha256("nope")}`, { method: "DELETE" }), 404, "MANIFEST_UNKNOWN");
  });

  it("DELETE in a repository that does not exist answers 404", async () => {
    // "If the repository does not exist, the response MUST return 404 Not Found."
    const res = await req(`${reg.url}/v2/${uid("nowhere/")}/manifests/${sha256("x")}`, { method: "DELETE" });
    await expectError(res, 404, ["NAME_UNKNOWN", "MANIFEST_UNKNOWN"]);
  });
});

describe("pulling unknown manifests", () => {
  it("GET/HEAD of an unknown tag or digest answers 404 MANIFEST_UNKNOWN", async () => {
    // "If the manifest is not found in the registry, the response code MUST be 404 Not Found."
    const repo = uid("u/");
    await pushManifest(reg.url, repo, "x", await makeImage(reg.url, repo), OCI_MANIFEST);
    await expectError(await getManifest(repo, "missing"), 404, "MANIFEST_UNKNOWN");
    await expectError(await getManifest(repo, sha256("missing")), 404, "MANIFEST_UNKNOWN");
    const head = await getManifest(repo, "missing", "HEAD");
    assert.equal(head.status, 404);
    assert.equal((await head.arrayBuffer()).byteLength, 0);
  });

  it("GET in a repository that does not exist answers 404", async () => {
    // "An attempt to pull a nonexistent repository MUST return response code 404 Not Found"
    await expectError(await getManifest(uid("nowhere/"), "latest"), 404, ["NAME_UNKNOWN", "MANIFEST_UNKNOWN"]);
  });

  it("a manifest pushed to one repository is not served from another", async () => {
    const repo = uid("u/");
    const pushed = await pushManifest(reg.url, repo, "x", await makeImage(reg.url, repo), OCI_MANIFEST);
    await expectError(await getManifest(uid("u/"), pushed.digest), 404, ["NAME_UNKNOWN", "MANIFEST_UNKNOWN"]);
  });

  it("a manifest is not served from the blob endpoint as if it were a layer of another repo", async () => {
    const repo = uid("u/");
    const pushed = await pushManifest(reg.url, repo, "x", await makeImage(reg.url, repo), OCI_MANIFEST);
    await expectError(await req(`${reg.url}/v2/${uid("u/")}/blobs/${pushed.digest}`), 404, ["BLOB_UNKNOWN", "NAME_UNKNOWN"]);
  });
});
