/**
 * Unit tests for manifest parsing/validation, from image-spec 1.1
 * (manifest.md, image-index.md, descriptor.md) and distribution-spec 1.1
 * ("Pushing Manifests", "Listing Referrers").
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { effectiveArtifactType, parseDescriptor, parseManifest } from "../../src/oci/manifest.js";
import { RegistryError } from "../../src/oci/errors.js";

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

const d = (s: string) => `sha256:${createHash("sha256").update(s).digest("hex")}`;
const desc = (mediaType: string, s: string, extra: Record<string, unknown> = {}) => ({ mediaType, digest: d(s), size: s.length, ...extra });
const buf = (v: unknown) => Buffer.from(JSON.stringify(v));

const image = (extra: Record<string, unknown> = {}) => ({
  schemaVersion: 2,
  mediaType: OCI_MANIFEST,
  config: desc("application/vnd.oci.image.config.v1+json", "cfg"),
  layers: [desc("application/vnd.oci.image.layer.v1.tar+gzip", "layer")],
  ...extra,
});

function invalid(bytes: Buffer, contentType: string | undefined, field?: RegExp): RegistryError {
  try {
    parseManifest(bytes, contentType);
  } catch (error) {
    assert.ok(error instanceof RegistryError, String(error));
    assert.equal(error.code, "MANIFEST_INVALID", error.message);
    assert.equal(error.status, 400);
    if (field) assert.match(error.message, field);
    return error;
  }
  assert.fail(`accepted ${bytes.toString().slice(0, 100)}`);
}

describe("parseManifest: the four manifest types", () => {
  it("OCI image manifest: config, layers, subject, artifactType, annotations", () => {
    const subject = desc(OCI_MANIFEST, "subject");
    const m = parseManifest(buf(image({ subject, artifactType: "application/x.sig", annotations: { a: "b" } })), OCI_MANIFEST);
    assert.equal(m.mediaType, OCI_MANIFEST);
    assert.equal(m.kind, "image");
    assert.equal(m.config?.digest, d("cfg"));
    assert.equal(m.layers.length, 1);
    assert.deepEqual(m.manifests, []);
    assert.equal(m.subject?.digest, d("subject"));
    assert.equal(m.artifactType, "application/x.sig");
    assert.deepEqual(m.annotations, { a: "b" });
  });

  it("OCI index, Docker schema 2, Docker manifest list", () => {
    const idx = parseManifest(buf({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [desc(OCI_MANIFEST, "m")] }), OCI_INDEX);
    assert.equal(idx.kind, "index");
    assert.equal(idx.manifests[0]?.digest, d("m"));
    const docker = parseManifest(buf(image({ mediaType: DOCKER_MANIFEST })), DOCKER_MANIFEST);
    assert.equal(docker.kind, "image");
    assert.equal(docker.mediaType, DOCKER_MANIFEST);
    const list = parseManifest(buf({ schemaVersion: 2, mediaType: DOCKER_LIST, manifests: [desc(DOCKER_MANIFEST, "m")] }), DOCKER_LIST);
    assert.equal(list.kind, "index");
    assert.equal(list.mediaType, DOCKER_LIST);
  });

  it("the media type comes from Content-Type when the body has no mediaType, else from the body", () => {
    const { mediaType: _omit, ...noType } = image();
    assert.equal(parseManifest(buf(noType), OCI_MANIFEST).mediaType, OCI_MANIFEST);
    assert.equal(parseManifest(buf(image()), undefined).mediaType, OCI_MANIFEST);
    assert.equal(parseManifest(buf(image({ mediaType: DOCKER_MANIFEST })), undefined).mediaType, DOCKER_MANIFEST);
  });

  it("Content-Type disagreeing with mediaType is MANIFEST_INVALID", () => {
    // image-spec: mediaType "when used, this field MUST contain the media type" of the manifest.
    invalid(buf(image()), DOCKER_MANIFEST, /mediaType|Content-Type/);
    invalid(buf(image()), OCI_INDEX);
    invalid(buf({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }), OCI_MANIFEST);
  });
});

describe("parseManifest: invalid manifests are MANIFEST_INVALID naming the field", () => {
  it("not JSON, not an object", () => {
    for (const text of ["", "{", "[]", "null", "1", '"x"']) invalid(Buffer.from(text), OCI_MANIFEST);
  });

  it("schemaVersion must be 2 (schema 1 is refused)", () => {
    invalid(buf(image({ schemaVersion: 1 })), OCI_MANIFEST, /schema/i);
    invalid(buf(image({ schemaVersion: "2" })), OCI_MANIFEST, /schemaVersion/);
    invalid(buf({ schemaVersion: 1, name: "x", tag: "y", fsLayers: [] }), "application/vnd.docker.distribution.manifest.v1+prettyjws");
  });

  it("image manifest without config or layers", () => {
    const { config: _c, ...noConfig } = image();
    invalid(buf(noConfig), OCI_MANIFEST, /config/);
    const { layers: _l, ...noLayers } = image();
    invalid(buf(noLayers), OCI_MANIFEST, /layers/);
  });

  it("index without manifests", () => {
    invalid(buf({ schemaVersion: 2, mediaType: OCI_INDEX }), OCI_INDEX, /manifests/);
  });

  it("bad descriptors: missing/invalid digest, negative or fractional size, empty mediaType, urls not strings", () => {
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ mediaType: "x", size: 1 }, /digest/],
      [{ mediaType: "x", digest: "sha256:zz", size: 1 }, /digest/],
      [{ mediaType: "x", digest: d("a"), size: -1 }, /size/],
      [{ mediaType: "x", digest: d("a"), size: 1.5 }, /size/],
      [{ mediaType: "x", digest: d("a"), size: "1" }, /size/],
      [{ mediaType: "", digest: d("a"), size: 1 }, /mediaType/],
      [{ mediaType: "x", digest: d("a"), size: 1, urls: [1] }, /urls/],
      [{ mediaType: "x", digest: d("a"), size: 1, urls: "http://x" }, /urls/],
      [{ mediaType: "x", digest: d("a"), size: 1, annotations: { k: 1 } }, /annotations/],
    ];
    for (const [layer, field] of bad) invalid(buf(image({ layers: [layer] })), OCI_MANIFEST, field);
    invalid(buf(image({ config: "not an object" })), OCI_MANIFEST, /config/);
  });

  it("a Docker foreign layer must carry urls", () => {
    invalid(buf(image({ mediaType: DOCKER_MANIFEST, layers: [desc(DOCKER_FOREIGN, "f")] })), DOCKER_MANIFEST, /urls/);
    const ok = parseManifest(buf(image({ mediaType: DOCKER_MANIFEST, layers: [desc(DOCKER_FOREIGN, "f", { urls: ["https://x/y"] })] })), DOCKER_MANIFEST);
    assert.deepEqual(ok.layers[0]?.urls, ["https://x/y"]);
  });

  it("top-level annotations and artifactType must have the right types", () => {
    invalid(buf(image({ annotations: ["x"] })), OCI_MANIFEST, /annotations/);
    invalid(buf(image({ artifactType: 5 })), OCI_MANIFEST, /artifactType/);
    invalid(buf(image({ subject: { digest: d("x") } })), OCI_MANIFEST, /subject/);
  });

  it("a deeply nested body neither crashes nor is accepted", () => {
    const deep = "[".repeat(100_000) + "]".repeat(100_000);
    invalid(Buffer.from(`{"schemaVersion":2,"annotations":${deep}}`), OCI_MANIFEST);
  });
});

describe("parseDescriptor", () => {
  it("keeps urls, annotations, artifactType and platform", () => {
    const parsed = parseDescriptor(
      desc("x", "a", { urls: ["https://a"], annotations: { k: "v" }, artifactType: "t", platform: { os: "linux" } }),
      "layers[0]",
    );
    assert.deepEqual(parsed.urls, ["https://a"]);
    assert.deepEqual(parsed.annotations, { k: "v" });
    assert.equal(parsed.artifactType, "t");
    assert.deepEqual(parsed.platform, { os: "linux" });
  });
});

describe("effectiveArtifactType (distribution-spec 1.1 Listing Referrers)", () => {
  it("artifactType wins; else an image manifest's config mediaType; an index without one has none", () => {
    // "If the referenced manifest has no artifactType, the descriptor's artifactType MUST be set to the config descriptor's mediaType."
    // "If the referenced index has no artifactType, the descriptor's artifactType MUST be omitted."
    assert.equal(effectiveArtifactType(parseManifest(buf(image({ artifactType: "a/b" })), OCI_MANIFEST)), "a/b");
    assert.equal(effectiveArtifactType(parseManifest(buf(image()), OCI_MANIFEST)), "application/vnd.oci.image.config.v1+json");
    const index = parseManifest(buf({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }), OCI_INDEX);
    assert.equal(effectiveArtifactType(index), undefined);
    const typedIndex = parseManifest(buf({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [], artifactType: "x/y" }), OCI_INDEX);
    assert.equal(effectiveArtifactType(typedIndex), "x/y");
  });
});
