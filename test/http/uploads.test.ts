/**
 * distribution-spec 1.1 "Pushing blobs": POST/PUT, single POST, chunked
 * PATCH, upload status, cancel, digest verification, cross-repo mounts.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import {
  expectError,
  pushBlob,
  req,
  resolveLocation,
  sha256,
  sha512,
  startUpload,
  uid,
  withQuery,
} from "./client.js";

let reg: TestRegistry;
before(async () => {
  reg = await startTestRegistry();
});
after(async () => {
  await reg?.close();
});

async function readBlob(repo: string, digest: string): Promise<{ status: number; body: Buffer }> {
  const res = await req(`${reg.url}/v2/${repo}/blobs/${digest}`);
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

function streamOf(...parts: Buffer[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const p of parts) controller.enqueue(new Uint8Array(p));
      controller.close();
    },
  });
}

describe("POST /v2/<name>/blobs/uploads/ (start a session)", () => {
  it("answers 202 with Location, Docker-Upload-UUID and Range", async () => {
    // "Upon success, the response MUST have a code of 202 Accepted, and MUST include the following header: Location"
    // "The <location> MUST contain a UUID representing a unique session ID"
    const repo = uid("up/");
    const res = await req(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: "POST", headers: { "Content-Length": "0" } });
    assert.equal(res.status, 202);
    await res.arrayBuffer();
    const location = res.headers.get("location");
    assert.ok(location, "Location present");
    const id = res.headers.get("docker-upload-uuid");
    assert.ok(id, "Docker-Upload-UUID present");
    assert.ok(location.includes(id), `Location ${location} contains the session id ${id}`);
    assert.ok(new URL(location, reg.url).pathname.startsWith(`/v2/${repo}/blobs/uploads/`));
    assert.equal(res.headers.get("range"), "0-0");
  });

  it("two sessions get different ids", async () => {
    const repo = uid("up/");
    const a = await startUpload(reg.url, repo);
    const b = await startUpload(reg.url, repo);
    assert.notEqual(a.url, b.url);
  });
});

describe("monolithic uploads", () => {
  it("POST then PUT ?digest= with the body answers 201 with Location and Docker-Content-Digest", async () => {
    // "Upon successful completion of the request, the response MUST have code 201 Created and MUST have ... Location: <blob-location>"
    const repo = uid("mono/");
    const data = randomBytes(2048);
    const digest = sha256(data);
    const { url } = await startUpload(reg.url, repo);
    const res = await req(withQuery(url, { digest }), {
      method: "PUT",
      headers: { "Content-Type": "application/octet-stream" },
      body: data,
    });
    assert.equal(res.status, 201);
    await res.arrayBuffer();
    assert.equal(res.headers.get("docker-content-digest"), digest);
    const blobUrl = resolveLocation(reg.url, res);
    const pulled = await req(blobUrl);
    assert.equal(pulled.status, 200, "Location is a pullable blob URL");
    assert.ok(Buffer.from(await pulled.arrayBuffer()).equals(data));
  });

  it("single POST ?digest= with the body answers 201 and the blob is pullable", async () => {
    // "Successful completion of the request MUST return a 201 Created and MUST include ... Location"
    const repo = uid("mono/");
    const data = randomBytes(999);
    const digest = sha256(data);
    const res = await req(`${reg.url}/v2/${repo}/blobs/uploads/?digest=${digest}`, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: data,
    });
    assert.equal(res.status, 201);
    await res.arrayBuffer();
    assert.equal(res.headers.get("docker-content-digest"), digest);
    const pulled = await req(resolveLocation(reg.url, res));
    assert.ok(Buffer.from(await pulled.arrayBuffer()).equals(data));
  });

  it("single POST ?digest= with a wrong digest answers 400 DIGEST_INVALID and stores nothing", async () => {
    const repo = uid("mono/");
    const data = randomBytes(100);
    const wrong = sha256(randomBytes(100));
    const res = await req(`${reg.url}/v2/${repo}/blobs/uploads/?digest=${wrong}`, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: data,
    });
    await expectError(res, 400, "DIGEST_INVALID");
    assert.equal((await readBlob(repo, wrong)).status, 404);
    assert.equal((await readBlob(repo, sha256(data))).status, 404);
  });

  it("an empty blob can be pushed (PUT ?digest= with no body)", async () => {
    const repo = uid("mono/");
    const digest = sha256(Buffer.alloc(0));
    const { url } = await startUpload(reg.url, repo);
    const res = await req(withQuery(url, { digest }), { method: "PUT", headers: { "Content-Length": "0" } });
    assert.equal(res.status, 201);
    await res.arrayBuffer();
    const head = await req(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-length"), "0");
  });
});

describe("chunked uploads (PATCH)", () => {
  it("PATCH with Content-Range answers 202 with Location and Range: 0-<end>; PUT closes with 201", async () => {
    // "The response for each successful chunk upload MUST be 202 Accepted, and MUST have ... Location, Range: 0-<end-of-range>"
    const repo = uid("chunk/");
    const data = randomBytes(3000);
    let { url } = await startUpload(reg.url, repo);
    const chunks = [data.subarray(0, 1000), data.subarray(1000, 2500), data.subarray(2500)];
    let offset = 0;
    for (const chunk of chunks.slice(0, 2)) {
      const res = await req(url, {
        method: "PATCH",
        headers: {
          "Content-Type": "application/octet-stream",
          "Content-Range": `${offset}-${offset + chunk.length - 1}`,
        },
        body: chunk,
      });
      assert.equal(res.status, 202, `PATCH ${offset}: ${res.status} ${await res.clone().text()}`);
      await res.arrayBuffer();
      offset += chunk.length;
      assert.equal(res.headers.get("range"), `0-${offset - 1}`);
      assert.ok(res.headers.get("docker-upload-uuid"));
      // "Each consecutive chunk upload SHOULD use the <location> provided in the response to the previous chunk upload."
      url = resolveLocation(reg.url, res);
    }
    // "The final chunk MAY be uploaded ... in the closing PUT request."
    const digest = sha256(data);
    const res = await req(withQuery(url, { digest }), {
      method: "PUT",
      headers: {
        "Content-Type": "application/octet-stream",
        "Content-Range": `${offset}-${data.length - 1}`,
      },
      body: chunks[2],
    });
    assert.equal(res.status, 201, await res.clone().text());
    await res.arrayBuffer();
    const pulled = await readBlob(repo, digest);
    assert.equal(pulled.status, 200);
    assert.ok(pulled.body.equals(data));
  });

  it("streamed PATCH without Content-Range (chunked transfer) then empty PUT", async () => {
    const repo = uid("chunk/");
    const a = randomBytes(70_000);
    const b = randomBytes(50_000);
    const { url } = await startUpload(reg.url, repo);
    const res = await req(url, {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream" },
      body: streamOf(a.subarray(0, 30_000), a.subarray(30_000)),
      duplex: "half",
    } as RequestInit);
    assert.equal(res.status, 202, await res.clone().text());
    await res.arrayBuffer();
    assert.equal(res.headers.get("range"), `0-${a.length - 1}`);
    const next = resolveLocation(reg.url, res);
    const res2 = await req(next, {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream" },
      body: streamOf(b),
      duplex: "half",
    } as RequestInit);
    assert.equal(res2.status, 202);
    await res2.arrayBuffer();
    assert.equal(res2.headers.get("range"), `0-${a.length + b.length - 1}`);
    const whole = Buffer.concat([a, b]);
    const done = await req(withQuery(resolveLocation(reg.url, res2), { digest: sha256(whole) }), {
      method: "PUT",
      headers: { "Content-Length": "0" },
    });
    assert.equal(done.status, 201, await done.clone().text());
    assert.ok((await readBlob(repo, sha256(whole))).body.equals(whole));
  });

  it("an out-of-order chunk answers 416 with Location and Range so the client can resume", async () => {
    // "If a chunk is uploaded out of order, the registry MUST respond with a 416 Requested Range Not Satisfiable code."
    // "A GET request may be used to retrieve the current valid offset and upload location."
    const repo = uid("chunk/");
    const data = randomBytes(200);
    const { url } = await startUpload(reg.url, repo);
    const first = await req(url, {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream", "Content-Range": "0-99" },
      body: data.subarray(0, 100),
    });
    assert.equal(first.status, 202);
    await first.arrayBuffer();
    const next = resolveLocation(reg.url, first);
    // Skip ahead: starts at 150 instead of 100.
    const bad = await req(next, {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream", "Content-Range": "150-199" },
      body: data.subarray(150),
    });
    assert.equal(bad.status, 416);
    assert.ok(bad.headers.get("location"), "416 carries Location to resume at");
    assert.equal(bad.headers.get("range"), "0-99", "416 carries the current Range");
    // Re-sending an already-received chunk is out of order too.
    const dup = await req(next, {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream", "Content-Range": "0-99" },
      body: data.subarray(0, 100),
    });
    assert.equal(dup.status, 416);
    await dup.arrayBuffer();
    // A JSON 4xx body's code "MUST be one of" the spec's codes.
    await expectError(bad, 416);
    // The session survived the refused chunks: resume and complete.
    const status = await req(next);
    assert.equal(status.status, 204);
    assert.equal(status.headers.get("range"), "0-99");
    const resume = await req(resolveLocation(reg.url, status), {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream", "Content-Range": "100-199" },
      body: data.subarray(100),
    });
    assert.equal(resume.status, 202);
    await resume.arrayBuffer();
    const done = await req(withQuery(resolveLocation(reg.url, resume), { digest: sha256(data) }), { method: "PUT" });
    assert.equal(done.status, 201, await done.clone().text());
    assert.ok((await readBlob(repo, sha256(data))).body.equals(data));
  });

  it("a closing PUT whose Content-Range does not start at the current offset answers 416", async () => {
    const repo = uid("chunk/");
    const data = randomBytes(100);
    const { url } = await startUpload(reg.url, repo);
    const first = await req(url, {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream", "Content-Range": "0-49" },
      body: data.subarray(0, 50),
    });
    assert.equal(first.status, 202);
    const next = resolveLocation(reg.url, first);
    const bad = await req(withQuery(next, { digest: sha256(data) }), {
      method: "PUT",
      headers: { "Content-Type": "application/octet-stream", "Content-Range": "60-99" },
      body: data.subarray(60),
    });
    assert.equal(bad.status, 416, await bad.clone().text());
    assert.equal((await readBlob(repo, sha256(data))).status, 404);
  });

  it("a Content-Range whose length disagrees with the body is refused (4xx), and the session stays consistent", async () => {
    const repo = uid("chunk/");
    const { url } = await startUpload(reg.url, repo);
    const res = await req(url, {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream", "Content-Range": "0-99" },
      body: randomBytes(50),
    });
    assert.ok(res.status >= 400 && res.status < 500, `got ${res.status}`);
    await res.arrayBuffer();
    const status = await req(url);
    assert.equal(status.status, 204);
    // Nothing from the refused chunk was kept: the next chunk still starts at 0.
    const retry = await req(url, {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream", "Content-Range": "0-49" },
      body: randomBytes(50),
    });
    assert.equal(retry.status, 202, await retry.clone().text());
    assert.equal(retry.headers.get("range"), "0-49");
  });

  it("a garbage Content-Range answers 4xx (400 or 416), never 500", async () => {
    const repo = uid("chunk/");
    for (const range of ["abc", "9-0", "-1-5", "0-", "99999999999999999999999-99999999999999999999999"]) {
      const { url } = await startUpload(reg.url, repo);
      const res = await req(url, {
        method: "PATCH",
        headers: { "Content-Type": "application/octet-stream", "Content-Range": range },
        body: randomBytes(10),
      });
      assert.ok(res.status === 400 || res.status === 416, `Content-Range "${range}": got ${res.status}`);
      await expectError(res, [400, 416]);
    }
  });
});

describe("upload status and cancel", () => {
  it("GET <location> answers 204 with Location and Range: 0-<end>", async () => {
    // "The response to an active upload <location> MUST be a 204 No Content response code, and MUST have ... Location, Range"
    const repo = uid("status/");
    const { url } = await startUpload(reg.url, repo);
    const patch = await req(url, {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream", "Content-Range": "0-41" },
      body: randomBytes(42),
    });
    assert.equal(patch.status, 202);
    const res = await req(resolveLocation(reg.url, patch));
    assert.equal(res.status, 204);
    assert.equal(res.headers.get("range"), "0-41");
    assert.ok(res.headers.get("location"));
    assert.ok(res.headers.get("docker-upload-uuid"));
  });

  it("DELETE <location> answers 204, then the session is 404 BLOB_UPLOAD_UNKNOWN", async () => {
    // "If successful, the response SHOULD be a 204 No Content response code."
    const repo = uid("cancel/");
    const { url } = await startUpload(reg.url, repo);
    const res = await req(url, { method: "DELETE" });
    assert.equal(res.status, 204);
    await expectError(await req(url), 404, "BLOB_UPLOAD_UNKNOWN");
    const patch = await req(url, {
      method: "PATCH",
      headers: { "Content-Type": "application/octet-stream" },
      body: randomBytes(10),
    });
    await expectError(patch, 404, "BLOB_UPLOAD_UNKNOWN");
    const put = await req(withQuery(url, { digest: sha256("x") }), { method: "PUT", body: "x" });
    await expectError(put, 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(await req(url, { method: "DELETE" }), 404, "BLOB_UPLOAD_UNKNOWN");
  });

  it("an unknown upload id answers 404 BLOB_UPLOAD_UNKNOWN for GET, PATCH, PUT and DELETE", async () => {
    const repo = uid("status/");
    const url = `${reg.url}/v2/${repo}/blobs/uploads/00000000-0000-4000-8000-000000000000`;
    await expectError(await req(url), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(await req(url, { method: "PATCH", body: "abc" }), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(await req(withQuery(url, { digest: sha256("abc") }), { method: "PUT", body: "abc" }), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectError(await req(url, { method: "DELETE" }), 404, "BLOB_UPLOAD_UNKNOWN");
  });

  it("an upload session belongs to its repository", async () => {
    const { url } = await startUpload(reg.url, uid("own/"));
    const id = new URL(url).pathname.split("/").pop()!;
    const other = `${reg.url}/v2/${uid("own/")}/blobs/uploads/${id}`;
    await expectError(await req(other), 404, "BLOB_UPLOAD_UNKNOWN");
  });

  it("a completed session is gone (404 BLOB_UPLOAD_UNKNOWN)", async () => {
    const repo = uid("status/");
    const data = randomBytes(10);
    const { url } = await startUpload(reg.url, repo);
    const res = await req(withQuery(url, { digest: sha256(data) }), { method: "PUT", body: data });
    assert.equal(res.status, 201);
    await expectError(await req(url), 404, "BLOB_UPLOAD_UNKNOWN");
  });
});

describe("digest verification", () => {
  it("PUT with a digest that does not match answers 400 DIGEST_INVALID and the blob is not visible", async () => {
    // code-4 DIGEST_INVALID: "provided digest did not match uploaded content"
    const repo = uid("verify/");
    const data = randomBytes(500);
    const wrong = sha256(randomBytes(500));
    const { url } = await startUpload(reg.url, repo);
    const res = await req(withQuery(url, { digest: wrong }), { method: "PUT", body: data });
    await expectError(res, 400, "DIGEST_INVALID");
    assert.equal((await readBlob(repo, wrong)).status, 404, "claimed digest not visible");
    assert.equal((await readBlob(repo, sha256(data))).status, 404, "real digest not visible either");
  });

  it("PUT without ?digest= is refused with 400 (DIGEST_INVALID)", async () => {
    const repo = uid("verify/");
    const { url } = await startUpload(reg.url, repo);
    const res = await req(url, { method: "PUT", body: randomBytes(10) });
    await expectError(res, 400, ["DIGEST_INVALID", "BLOB_UPLOAD_INVALID"]);
  });

  it("sha512 digests are supported for upload and pull", async () => {
    const repo = uid("verify/");
    const data = randomBytes(1234);
    const digest = sha512(data);
    const { url } = await startUpload(reg.url, repo);
    const res = await req(withQuery(url, { digest }), { method: "PUT", body: data });
    assert.equal(res.status, 201, await res.clone().text());
    const pulled = await req(`${reg.url}/v2/${repo}/blobs/${digest}`);
    assert.equal(pulled.status, 200);
    assert.equal(pulled.headers.get("docker-content-digest"), digest);
    assert.ok(Buffer.from(await pulled.arrayBuffer()).equals(data));
  });

  it("a sha512 digest that does not match answers 400 DIGEST_INVALID", async () => {
    const repo = uid("verify/");
    const { url } = await startUpload(reg.url, repo);
    const res = await req(withQuery(url, { digest: sha512(randomBytes(8)) }), { method: "PUT", body: randomBytes(8) });
    await expectError(res, 400, "DIGEST_INVALID");
  });

  it("an unsupported algorithm answers 400 DIGEST_INVALID", async () => {
    const repo = uid("verify/");
    for (const digest of ["md5:d41d8cd98f00b204e9800998ecf8427e", "sha384:" + "a".repeat(96), "sha256:short", "garbage"]) {
      const { url } = await startUpload(reg.url, repo);
      const res = await req(withQuery(url, { digest }), { method: "PUT", body: Buffer.alloc(0) });
      await expectError(res, 400, "DIGEST_INVALID");
    }
  });
});

describe("cross-repository mount", () => {
  it("?mount=&from= of a blob in another repository answers 201 with Location and Docker-Content-Digest", async () => {
    // "The response to a successful mount MUST be 201 Created, and MUST contain ... Location: <blob-location>"
    const from = uid("mnt/");
    const to = uid("mnt/");
    const data = randomBytes(777);
    const digest = await pushBlob(reg.url, from, data);
    const res = await req(`${reg.url}/v2/${to}/blobs/uploads/?mount=${digest}&from=${from}`, {
      method: "POST",
      headers: { "Content-Length": "0" },
    });
    assert.equal(res.status, 201, await res.clone().text());
    await res.arrayBuffer();
    assert.equal(res.headers.get("docker-content-digest"), digest);
    const location = resolveLocation(reg.url, res);
    assert.ok(new URL(location).pathname.startsWith(`/v2/${to}/blobs/`), `Location ${location} is in the target repo`);
    const pulled = await readBlob(to, digest);
    assert.equal(pulled.status, 200);
    assert.ok(pulled.body.equals(data));
  });

  it("mount of an unknown blob answers 202 with a new upload session that works", async () => {
    // "if a registry ... is unable to mount the requested blob, it SHOULD return a 202"
    const to = uid("mnt/");
    const data = randomBytes(50);
    const digest = sha256(data);
    const res = await req(`${reg.url}/v2/${to}/blobs/uploads/?mount=${digest}&from=${uid("mnt/")}`, {
      method: "POST",
      headers: { "Content-Length": "0" },
    });
    assert.equal(res.status, 202);
    await res.arrayBuffer();
    const url = resolveLocation(reg.url, res);
    const put = await req(withQuery(url, { digest }), { method: "PUT", body: data });
    assert.equal(put.status, 201);
    assert.ok((await readBlob(to, digest)).body.equals(data));
  });

  it("mount from a repository that does not hold the blob answers 202, not a leak of another repo's blob", async () => {
    const holder = uid("mnt/");
    const empty = uid("mnt/");
    const to = uid("mnt/");
    await pushBlob(reg.url, empty, randomBytes(5));
    const digest = await pushBlob(reg.url, holder, randomBytes(60));
    const res = await req(`${reg.url}/v2/${to}/blobs/uploads/?mount=${digest}&from=${empty}`, { method: "POST" });
    assert.equal(res.status, 202);
    await res.arrayBuffer();
    assert.equal((await readBlob(to, digest)).status, 404);
  });

  it("automatic mount: ?mount= without from answers 201 when the blob exists in a readable repository", async () => {
    // "The registry MAY treat the from parameter as optional, and it MAY cross-mount the blob if it can be found."
    const from = uid("mnt/");
    const to = uid("mnt/");
    const data = randomBytes(333);
    const digest = await pushBlob(reg.url, from, data);
    const res = await req(`${reg.url}/v2/${to}/blobs/uploads/?mount=${digest}`, { method: "POST" });
    assert.equal(res.status, 201, await res.clone().text());
    assert.ok((await readBlob(to, digest)).body.equals(data));
  });

  it("mount with an invalid digest answers 400 DIGEST_INVALID (or 202), never 500", async () => {
    const res = await req(`${reg.url}/v2/${uid("mnt/")}/blobs/uploads/?mount=sha256:nothex&from=${uid("mnt/")}`, {
      method: "POST",
    });
    if (res.status === 202) return void (await res.arrayBuffer());
    await expectError(res, 400, "DIGEST_INVALID");
  });

  it("mount with an invalid from name answers 400 NAME_INVALID (or 202), never 500", async () => {
    const res = await req(`${reg.url}/v2/${uid("mnt/")}/blobs/uploads/?mount=${sha256("x")}&from=UPPER/Case`, {
      method: "POST",
    });
    if (res.status === 202) return void (await res.arrayBuffer());
    await expectError(res, 400, "NAME_INVALID");
  });
});
