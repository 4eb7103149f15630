/**
 * Invalid input of every kind: names, tags, digests, ranges, bodies, headers.
 * distribution-spec 1.1: "<name> MUST match the following regular expression";
 * "<reference> ... MUST NOT be in any other format"; error bodies use the
 * spec's format. Ferry's rule on top: never a 500 for a client mistake, never
 * a filesystem path or stack trace in a reply.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import {
  OCI_MANIFEST,
  assertNoLeak,
  expectError,
  makeImage,
  pushBlob,
  pushManifest,
  putManifest,
  rawRequest,
  req,
  sha256,
  startUpload,
  uid,
} from "./client.js";

let reg: TestRegistry;
let repo: string;
let blob: string;
let upload: string;
before(async () => {
  reg = await startTestRegistry();
  repo = uid("abuse/");
  blob = await pushBlob(reg.url, repo, "a blob");
  await pushManifest(reg.url, repo, "latest", await makeImage(reg.url, repo), OCI_MANIFEST);
  upload = new URL((await startUpload(reg.url, repo)).url).pathname;
});
after(async () => {
  await reg?.close();
});

describe("invalid repository names answer 400 NAME_INVALID", () => {
  const names = [
    ["uppercase", "Foo/bar"],
    ["too long", "a".repeat(300)],
    ["dot-dot component", "foo/../bar"],
    ["leading separator", "-foo"],
    ["trailing separator", "foo-"],
    ["empty component", "foo//bar"],
    ["three underscores", "foo___bar"],
    ["bad character", "foo@bar"],
    ["percent-encoded dot-dot", "%2e%2e/%2e%2e/etc"],
  ];
  for (const [what, name] of names) {
    it(`${what}: ${name.slice(0, 40)}`, async () => {
      const paths = [`/v2/${name}/tags/list`, `/v2/${name}/manifests/latest`, `/v2/${name}/blobs/${blob}`];
      for (const path of paths) {
        // Literal `..` must reach the server unnormalised, so these go over a raw socket.
        const raw = await rawRequest(reg.url, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
        assert.ok(raw.status >= 400 && raw.status < 500, `${path}: got ${raw.status}`);
        assertNoLeak(raw.raw, reg.dataDir, path);
        if (raw.status === 400) {
          const body = JSON.parse(raw.body) as { errors: Array<{ code: string }> };
          assert.ok(body.errors.some((e) => e.code === "NAME_INVALID"), `${path}: ${raw.body}`);
        }
      }
      const post = await rawRequest(reg.url, `POST /v2/${name}/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      assert.ok(post.status >= 400 && post.status < 500, `POST uploads: ${post.status}`);
    });
  }

  it("names at the grammar's edges are accepted: 255 characters, '__', '-+', dots", async () => {
    // name: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
    for (const name of ["a__b/c---d/e.f", "x/" + "a".repeat(253), "0/1/2/3/4/5/6/7/8/9"]) {
      const digest = await pushBlob(reg.url, name, "edge");
      const res = await req(`${reg.url}/v2/${name}/blobs/${digest}`, { method: "HEAD" });
      assert.equal(res.status, 200, name);
    }
  });
});

describe("invalid tags: 400 on PUT, 404 MANIFEST_UNKNOWN on reads", () => {
  // tag: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
  const tags = [".hidden", "-dash", "a".repeat(129), "tag!", "tag%20space", "t@g"];
  for (const tag of tags) {
    it(`PUT and GET ${tag.slice(0, 30)}`, async () => {
      const manifest = await makeImage(reg.url, repo);
      const put = await putManifest(reg.url, repo, tag, manifest, OCI_MANIFEST);
      await expectError(put, 400);
      // No manifest can carry an invalid tag, so reads find nothing: the OCI conformance
      // suite (v1.1.x) requires 404 for GET/HEAD /manifests/.INVALID_MANIFEST_NAME.
      const get = await req(`${reg.url}/v2/${repo}/manifests/${tag}`);
      await expectError(get, 404, "MANIFEST_UNKNOWN");
      const head = await req(`${reg.url}/v2/${repo}/manifests/${tag}`, { method: "HEAD" });
      assert.equal(head.status, 404);
      await head.arrayBuffer();
    });
  }

  it("a 128-character tag and one starting with '_' are valid", async () => {
    const manifest = await makeImage(reg.url, repo);
    for (const tag of ["_underscore", "A".repeat(128)]) {
      const res = await putManifest(reg.url, repo, tag, manifest, OCI_MANIFEST);
      assert.equal(res.status, 201, `${tag}: ${res.status}`);
      await res.arrayBuffer();
    }
  });
});

describe("invalid digests answer 400 DIGEST_INVALID", () => {
  const digests = [
    "sha256:" + "a".repeat(63),
    "sha256:" + "a".repeat(65),
    "sha256:" + "A".repeat(64),
    "sha256:" + "g".repeat(64),
    "sha512:" + "a".repeat(64),
    "sha256:",
    ":abc",
  ];
  for (const digest of digests) {
    it(`${digest.slice(0, 24)}… on manifests, blobs and upload PUT`, async () => {
      // A manifest reference with ':' is a digest; it cannot be a tag.
      await expectError(await req(`${reg.url}/v2/${repo}/manifests/${digest}`), [400, 404], ["DIGEST_INVALID", "MANIFEST_UNKNOWN"]);
      await expectError(await req(`${reg.url}/v2/${repo}/blobs/${digest}`), [400, 404], ["DIGEST_INVALID", "BLOB_UNKNOWN"]);
      const manifest = await makeImage(reg.url, repo);
      await expectError(await putManifest(reg.url, repo, digest, manifest, OCI_MANIFEST), 400, "DIGEST_INVALID");
      const { url } = await startUpload(reg.url, repo);
      await expectError(await req(`${url}${url.includes("?") ? "&" : "?"}digest=${digest}`, { method: "PUT" }), 400, "DIGEST_INVALID");
    });
  }
});

describe("abuse cases: never 500, never a path or stack trace", () => {
  const deep = (depth: number) => "[".repeat(depth) + "]".repeat(depth);
  const deepObject = (depth: number) => '{"a":'.repeat(depth) + "1" + "}".repeat(depth);

  interface Case {
    name: string;
    raw?: string | (() => string);
    method?: string;
    path?: string | (() => string);
    headers?: Record<string, string>;
    body?: string | Buffer | (() => string | Buffer);
  }

  const cases: Case[] = [
    { name: "literal ../ in name", raw: () => `GET /v2/../../etc/passwd/manifests/latest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n` },
    { name: "literal ../ after name", raw: () => `GET /v2/${repo}/../../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n` },
    { name: "%2e%2e in name", path: "/v2/%2e%2e/%2e%2e/etc/passwd/tags/list" },
    { name: "%2f in name", path: () => `/v2/${repo}%2f..%2f..%2fetc/tags/list` },
    { name: "../ digest (encoded)", path: () => `/v2/${repo}/blobs/..%2F..%2F..%2Fetc%2Fpasswd` },
    { name: "sha256:../ digest", path: () => `/v2/${repo}/blobs/sha256:..%2F..%2Fetc%2Fpasswd` },
    { name: "../ manifest digest", path: () => `/v2/${repo}/manifests/sha256:..%2F..%2F..%2Fetc` },
    { name: "../ referrers digest", path: () => `/v2/${repo}/referrers/sha256:..%2F..%2Fx` },
    { name: "../ upload id (encoded)", path: () => `/v2/${repo}/blobs/uploads/..%2F..%2F..%2Fetc%2Fpasswd` },
    { name: "%2e%2e upload id", path: () => `/v2/${repo}/blobs/uploads/%2e%2e` },
    { name: "literal ../ upload id", raw: () => `PATCH /v2/${repo}/blobs/uploads/../../../../etc/passwd HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc` },
    { name: "upload id with NUL", path: () => `/v2/${repo}/blobs/uploads/abc%00def` },
    { name: "upload id, PUT with traversal", method: "PUT", path: () => `/v2/${repo}/blobs/uploads/..%2f..%2fdata?digest=${sha256("x")}`, body: "x" },
    { name: "upload id, DELETE with traversal", method: "DELETE", path: () => `/v2/${repo}/blobs/uploads/..%2f..%2fblobs` },
    { name: "very long upload id", path: () => `/v2/${repo}/blobs/uploads/${"a".repeat(5000)}` },
    { name: "bad percent-encoding", path: () => `/v2/${repo}/manifests/%zz` },
    { name: "NUL in tag", path: () => `/v2/${repo}/manifests/a%00b` },
    { name: "mount traversal", method: "POST", path: () => `/v2/${repo}/blobs/uploads/?mount=../../etc/passwd&from=../../etc` },
    { name: "mount from self", method: "POST", path: () => `/v2/${repo}/blobs/uploads/?mount=${blob}&from=${repo}` },
    { name: "digest param traversal on POST", method: "POST", path: () => `/v2/${repo}/blobs/uploads/?digest=sha256:../../x`, body: "x" },
    { name: "10k-char name", path: `/v2/${"a/".repeat(5000)}x/tags/list` },
    { name: "huge header", headers: { "X-Big": "a".repeat(100_000) }, path: "/v2/" },
    { name: "huge Accept", headers: { Accept: "b".repeat(60_000) }, path: () => `/v2/${repo}/manifests/latest` },
    { name: "negative Content-Length", raw: () => `PATCH ${upload} HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\nConnection: close\r\n\r\n` },
    { name: "non-numeric Content-Length", raw: () => `PUT /v2/${repo}/manifests/x HTTP/1.1\r\nHost: x\r\nContent-Type: ${OCI_MANIFEST}\r\nContent-Length: abc\r\nConnection: close\r\n\r\n` },
    { name: "Content-Length larger than body (client hangs up)", raw: () => `PUT /v2/${repo}/manifests/x HTTP/1.1\r\nHost: x\r\nContent-Type: ${OCI_MANIFEST}\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{"schemaVersion":2` },
    { name: "garbage Content-Range", method: "PATCH", path: () => upload, headers: { "Content-Range": "bytes=zz-yy" }, body: "abc" },
    { name: "huge Content-Range", method: "PATCH", path: () => upload, headers: { "Content-Range": "0-99999999999999999999999999" }, body: "abc" },
    { name: "negative Content-Range", method: "PATCH", path: () => upload, headers: { "Content-Range": "-5--1" }, body: "abc" },
    { name: "garbage Range on blob", path: () => `/v2/${repo}/blobs/${blob}`, headers: { Range: "bytes=-" } },
    { name: "multi-range on blob", path: () => `/v2/${repo}/blobs/${blob}`, headers: { Range: "bytes=0-1,3-4" } },
    { name: "huge Range on blob", path: () => `/v2/${repo}/blobs/${blob}`, headers: { Range: "bytes=99999999999999999999999-" } },
    { name: "deeply nested arrays manifest", method: "PUT", path: () => `/v2/${repo}/manifests/bomb`, headers: { "Content-Type": OCI_MANIFEST }, body: () => deep(200_000) },
    { name: "deeply nested annotations", method: "PUT", path: () => `/v2/${repo}/manifests/bomb`, headers: { "Content-Type": OCI_MANIFEST }, body: () => `{"schemaVersion":2,"annotations":${deepObject(100_000)}}` },
    { name: "nested arrays inside layers", method: "PUT", path: () => `/v2/${repo}/manifests/bomb`, headers: { "Content-Type": OCI_MANIFEST }, body: () => `{"schemaVersion":2,"mediaType":"${OCI_MANIFEST}","config":${deep(50_000)},"layers":[]}` },
    { name: "many layers", method: "PUT", path: () => `/v2/${repo}/manifests/bomb`, headers: { "Content-Type": OCI_MANIFEST }, body: () => JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "x", digest: sha256("c"), size: 1 }, layers: Array.from({ length: 20_000 }, (_, i) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: sha256(String(i)), size: i })) }) },
    { name: "manifest size as huge number", method: "PUT", path: () => `/v2/${repo}/manifests/bomb`, headers: { "Content-Type": OCI_MANIFEST }, body: () => JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "x", digest: sha256("c"), size: 1e308 }, layers: [] }) },
    { name: "manifest digest traversal", method: "PUT", path: () => `/v2/${repo}/manifests/bomb`, headers: { "Content-Type": OCI_MANIFEST }, body: () => JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "x", digest: "sha256:../../../etc/passwd", size: 1 }, layers: [] }) },
    { name: "__proto__ in manifest", method: "PUT", path: () => `/v2/${repo}/manifests/proto`, headers: { "Content-Type": OCI_MANIFEST }, body: () => `{"schemaVersion":2,"mediaType":"${OCI_MANIFEST}","__proto__":{"polluted":true},"config":{"mediaType":"x","digest":"${sha256("c")}","size":1,"__proto__":{"size":"x"}},"layers":[]}` },
    { name: "invalid UTF-8 manifest", method: "PUT", path: () => `/v2/${repo}/manifests/utf`, headers: { "Content-Type": OCI_MANIFEST }, body: () => Buffer.from([0xff, 0xfe, 0x7b, 0x7d]) },
    { name: "subject digest traversal", method: "PUT", path: () => `/v2/${repo}/manifests/subj`, headers: { "Content-Type": OCI_MANIFEST }, body: () => JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "x", digest: sha256("c"), size: 1 }, layers: [], subject: { mediaType: OCI_MANIFEST, digest: "sha256:../../x", size: 1 } }) },
    { name: "foreign layer with javascript: url", method: "PUT", path: () => `/v2/${repo}/manifests/js`, headers: { "Content-Type": OCI_MANIFEST }, body: () => JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "x", digest: sha256("c"), size: 1 }, layers: [{ mediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", digest: sha256("f"), size: 1, urls: ["javascript:alert(1)", "file:///etc/passwd", "not a url"] }] }) },
    { name: "tags n overflow", path: () => `/v2/${repo}/tags/list?n=1e400` },
    { name: "tags last huge", path: () => `/v2/${repo}/tags/list?last=${"z".repeat(20_000)}` },
    { name: "catalog last traversal", path: "/v2/_catalog?last=../../etc&n=5" },
    { name: "referrers artifactType garbage", path: () => `/v2/${repo}/referrers/${blob}?artifactType=%00%ff` },
    { name: "HTTP/1.0 request", raw: () => `GET /v2/${repo}/tags/list HTTP/1.0\r\n\r\n` },
    { name: "absolute-form target", raw: () => `GET http://evil.example/v2/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n` },
    { name: "unknown method", raw: () => `BREW /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n` },
    { name: "unknown endpoint", path: "/v2/foo/bar/baz/unknown" },
    { name: "outside /v2", path: "/etc/passwd" },
  ];

  for (const c of cases) {
    it(c.name, async () => {
      let status: number;
      let text: string;
      if (c.raw) {
        const raw = await rawRequest(reg.url, typeof c.raw === "function" ? c.raw() : c.raw);
        status = raw.status;
        text = raw.raw;
      } else {
        const path = typeof c.path === "function" ? c.path() : c.path!;
        const body = typeof c.body === "function" ? c.body() : c.body;
        const res = await req(`${reg.url}${path}`, {
          method: c.method ?? "GET",
          headers: c.headers,
          body: body === undefined ? undefined : typeof body === "string" ? body : new Uint8Array(body),
        });
        status = res.status;
        text = [...res.headers].map(([k, v]) => `${k}: ${v}`).join("\n") + "\n\n" + (await res.text());
      }
      assert.ok(status < 500, `${c.name}: got ${status} ${text.slice(0, 300)}`);
      assertNoLeak(text, reg.dataDir, c.name);
    });
  }

  it("nothing outside the repository became readable, and the registry still works", async () => {
    const res = await req(`${reg.url}/v2/${repo}/blobs/${blob}`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "a blob");
    const proto = ({} as Record<string, unknown>).polluted;
    assert.equal(proto, undefined, "no prototype pollution in this process");
  });
});
