/**
 * distribution-spec 1.1: API version check, pulling blobs (GET/HEAD, Range),
 * deleting blobs, and 405 for methods an endpoint does not answer.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { expectError, pushBlob, req, sha256, uid } from "./client.js";

let reg: TestRegistry;
before(async () => {
  reg = await startTestRegistry();
});
after(async () => {
  await reg?.close();
});

describe("GET /v2/ (API version check)", () => {
  it("answers 200 with Docker-Distribution-API-Version: registry/2.0", async () => {
    // "If the response is 200 OK, then the registry implements this specification."
    // "When a 200 OK or 401 Unauthorized response is returned, the Docker-Distribution-API-Version header SHOULD be set to registry/2.0"
    const res = await req(`${reg.url}/v2/`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("docker-distribution-api-version"), "registry/2.0");
    await res.arrayBuffer();
  });

  it("answers /v2 without trailing slash the same way", async () => {
    const res = await req(`${reg.url}/v2`);
    assert.ok(res.status === 200 || res.status === 301 || res.status === 308, `got ${res.status}`);
    await res.arrayBuffer();
  });

  it("HEAD /v2/ answers 200 with no body", async () => {
    const res = await req(`${reg.url}/v2/`, { method: "HEAD" });
    assert.equal(res.status, 200);
    assert.equal((await res.arrayBuffer()).byteLength, 0);
  });
});

describe("pulling blobs", () => {
  const repo = uid("blobs/");
  const data = randomBytes(1000);
  let digest: string;
  before(async () => {
    digest = await pushBlob(reg.url, repo, data);
  });

  it("GET returns 200, the exact bytes, Docker-Content-Digest and Content-Length", async () => {
    // "A GET request to an existing blob URL MUST provide the expected blob, with a response code that MUST be 200 OK."
    // Docker-Content-Digest "MUST be a digest matching that of the response body".
    const res = await req(`${reg.url}/v2/${repo}/blobs/${digest}`);
    assert.equal(res.status, 200);
    const body = Buffer.from(await res.arrayBuffer());
    assert.ok(body.equals(data), "body is the pushed blob");
    assert.equal(res.headers.get("docker-content-digest"), digest);
    assert.equal(sha256(body), res.headers.get("docker-content-digest"));
    assert.equal(res.headers.get("content-length"), String(data.length));
  });

  it("GET sends an ETag and advertises byte ranges", async () => {
    const res = await req(`${reg.url}/v2/${repo}/blobs/${digest}`);
    await res.arrayBuffer();
    const etag = res.headers.get("etag");
    assert.ok(etag, "ETag header present");
    const again = await req(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: "HEAD" });
    assert.equal(again.headers.get("etag"), etag, "the ETag of immutable content is stable");
    assert.equal(res.headers.get("accept-ranges"), "bytes");
  });

  it("HEAD returns 200 with Docker-Content-Digest, Content-Length and no body", async () => {
    // "A HEAD request to an existing blob or manifest URL MUST return 200 OK."
    const res = await req(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: "HEAD" });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("docker-content-digest"), digest);
    assert.equal(res.headers.get("content-length"), String(data.length));
    assert.equal((await res.arrayBuffer()).byteLength, 0);
  });

  it("GET/HEAD of an unknown blob answer 404 BLOB_UNKNOWN", async () => {
    // "If the blob is not found in the registry, the response code MUST be 404 Not Found."
    const unknown = sha256(randomBytes(16));
    await expectError(await req(`${reg.url}/v2/${repo}/blobs/${unknown}`), 404, "BLOB_UNKNOWN");
    const head = await req(`${reg.url}/v2/${repo}/blobs/${unknown}`, { method: "HEAD" });
    assert.equal(head.status, 404);
    assert.equal((await head.arrayBuffer()).byteLength, 0, "HEAD has no body");
  });

  it("a blob pushed to one repository is not visible from another", async () => {
    // Blobs are addressed per repository: /v2/<name>/blobs/<digest>; "not found in the repository" → 404.
    await expectError(await req(`${reg.url}/v2/${uid("other/")}/blobs/${digest}`), 404, ["BLOB_UNKNOWN", "NAME_UNKNOWN"]);
  });

  it("a percent-encoded digest (sha256%3A...) addresses the same blob", async () => {
    const res = await req(`${reg.url}/v2/${repo}/blobs/${digest.replace(":", "%3A")}`);
    assert.equal(res.status, 200);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(data));
  });

  it("an invalid digest answers 400 DIGEST_INVALID (or 404), never 500", async () => {
    for (const bad of ["sha256:xyz", "sha256:" + "A".repeat(64), "nothex", "sha256:" + "a".repeat(63)]) {
      const res = await req(`${reg.url}/v2/${repo}/blobs/${bad}`);
      await expectError(res, [400, 404], ["DIGEST_INVALID", "BLOB_UNKNOWN"]);
    }
  });
});

describe("blob Range requests (RFC 9110; spec: registries SHOULD support Range)", () => {
  const repo = uid("ranges/");
  const data = randomBytes(4096);
  let digest: string;
  let url: string;
  before(async () => {
    digest = await pushBlob(reg.url, repo, data);
    url = `${reg.url}/v2/${repo}/blobs/${digest}`;
  });

  it("a single range answers 206 with Content-Range and exactly those bytes", async () => {
    const res = await req(url, { headers: { Range: "bytes=100-199" } });
    assert.equal(res.status, 206);
    assert.equal(res.headers.get("content-range"), `bytes 100-199/${data.length}`);
    assert.equal(res.headers.get("content-length"), "100");
    const body = Buffer.from(await res.arrayBuffer());
    assert.ok(body.equals(data.subarray(100, 200)));
  });

  it("an open-ended range (bytes=N-) answers the tail from N", async () => {
    const res = await req(url, { headers: { Range: "bytes=4000-" } });
    assert.equal(res.status, 206);
    assert.equal(res.headers.get("content-range"), `bytes 4000-4095/${data.length}`);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(data.subarray(4000)));
  });

  it("a suffix range (bytes=-N) answers the last N bytes", async () => {
    const res = await req(url, { headers: { Range: "bytes=-10" } });
    assert.equal(res.status, 206);
    assert.equal(res.headers.get("content-range"), `bytes 4086-4095/${data.length}`);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(data.subarray(4086)));
  });

  it("a range whose end is past the blob is clipped to the blob", async () => {
    // RFC 9110 14.1.1: a last-pos beyond the representation is replaced by length-1.
    const res = await req(url, { headers: { Range: "bytes=4090-999999" } });
    assert.equal(res.status, 206);
    assert.equal(res.headers.get("content-range"), `bytes 4090-4095/${data.length}`);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(data.subarray(4090)));
  });

  it("an unsatisfiable range answers 416 with Content-Range: bytes */size", async () => {
    // RFC 9110 15.5.17: the server SHOULD send Content-Range with the current length.
    const res = await req(url, { headers: { Range: "bytes=5000-6000" } });
    assert.equal(res.status, 416);
    assert.equal(res.headers.get("content-range"), `bytes */${data.length}`);
    // A JSON 4xx body "MUST have the following format", code "MUST be one of" the spec's codes.
    await expectError(res, 416);
  });

  it("a malformed Range header is ignored (200 full body) or refused with 416, never 500", async () => {
    for (const range of ["bytes=abc", "items=0-5", "bytes=10-5", "bytes=--1", "bytes=99999999999999999999999-"]) {
      const res = await req(url, { headers: { Range: range } });
      assert.ok(res.status === 200 || res.status === 416, `Range ${range}: got ${res.status}`);
      const body = Buffer.from(await res.arrayBuffer());
      if (res.status === 200) assert.ok(body.equals(data), `Range ${range}: 200 must carry the whole blob`);
    }
  });
});

describe("deleting blobs", () => {
  it("DELETE answers 202, then the blob is 404 BLOB_UNKNOWN", async () => {
    // "Upon success, the registry MUST respond with code 202 Accepted. If the blob is not found, a 404 Not Found code MUST be returned."
    const repo = uid("del/");
    const digest = await pushBlob(reg.url, repo, randomBytes(100));
    const res = await req(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: "DELETE" });
    assert.equal(res.status, 202);
    await res.arrayBuffer();
    await expectError(await req(`${reg.url}/v2/${repo}/blobs/${digest}`), 404, "BLOB_UNKNOWN");
    const head = await req(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: "HEAD" });
    assert.equal(head.status, 404);
  });

  it("DELETE of an unknown blob answers 404 BLOB_UNKNOWN", async () => {
    const repo = uid("del/");
    await pushBlob(reg.url, repo, randomBytes(10));
    const res = await req(`${reg.url}/v2/${repo}/blobs/${sha256(randomBytes(8))}`, { method: "DELETE" });
    await expectError(res, 404, "BLOB_UNKNOWN");
  });

  it("deleting a blob in one repository leaves it readable in another", async () => {
    const data = randomBytes(300);
    const a = uid("del/");
    const b = uid("del/");
    const digest = await pushBlob(reg.url, a, data);
    await pushBlob(reg.url, b, data);
    assert.equal((await req(`${reg.url}/v2/${a}/blobs/${digest}`, { method: "DELETE" })).status, 202);
    const res = await req(`${reg.url}/v2/${b}/blobs/${digest}`);
    assert.equal(res.status, 200);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(data));
  });
});

describe("405 Method Not Allowed", () => {
  const d = sha256("x");
  const cases: Array<[string, string]> = [
    ["DELETE", "/v2/"],
    ["POST", "/v2/foo/manifests/latest"],
    ["PATCH", "/v2/foo/manifests/latest"],
    ["PUT", `/v2/foo/blobs/${d}`],
    ["POST", `/v2/foo/blobs/${d}`],
    ["DELETE", "/v2/foo/tags/list"],
    ["PUT", "/v2/_catalog"],
    ["GET", "/v2/foo/blobs/uploads/"],
    ["DELETE", `/v2/foo/referrers/${d}`],
  ];
  for (const [method, path] of cases) {
    it(`${method} ${path} answers 405 with an Allow header`, async () => {
      // RFC 9110 15.5.6: "The origin server MUST generate an Allow header field in a 405 response".
      const res = await req(`${reg.url}${path}`, { method });
      assert.equal(res.status, 405, `${method} ${path}: ${res.status}`);
      assert.ok(res.headers.get("allow"), "Allow header present");
      assert.ok(!res.headers.get("allow")!.split(/,\s*/).includes(method), "Allow does not list the refused method");
      await res.arrayBuffer();
    });
  }
});
