/**
 * Concurrent pushes and restarts.
 * distribution-spec 1.1 "Layer Upload De-duplication": "If process A and B
 * upload the same layer at the same time, both operations will proceed and the
 * first to complete will be stored in the registry."
 * Issue 2: upload sessions survive a restart; two clients pushing the same
 * blob or tag at once both succeed or fail cleanly; nothing is corrupted.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import {
  OCI_MANIFEST,
  expectError,
  makeImage,
  pushManifest,
  putManifest,
  req,
  resolveLocation,
  sha256,
  startUpload,
  uid,
  withQuery,
} from "./client.js";

describe("concurrency", () => {
  let reg: TestRegistry;
  before(async () => {
    reg = await startTestRegistry();
  });
  after(async () => {
    await reg?.close();
  });

  it("two clients pushing the same blob at once both succeed and the blob is intact", async () => {
    const repo = uid("conc/");
    const data = randomBytes(3 * 1024 * 1024);
    const digest = sha256(data);
    const pushChunked = async () => {
      let { url } = await startUpload(reg.url, repo);
      const step = 256 * 1024;
      for (let offset = 0; offset < data.length; offset += step) {
        const chunk = data.subarray(offset, Math.min(offset + step, data.length));
        const res = await req(url, {
          method: "PATCH",
          headers: { "Content-Type": "application/octet-stream", "Content-Range": `${offset}-${offset + chunk.length - 1}` },
          body: new Uint8Array(chunk),
        });
        assert.equal(res.status, 202);
        await res.arrayBuffer();
        url = resolveLocation(reg.url, res);
      }
      const res = await req(withQuery(url, { digest }), { method: "PUT" });
      return res.status;
    };
    const pushMono = async () => {
      const { url } = await startUpload(reg.url, repo);
      const res = await req(withQuery(url, { digest }), { method: "PUT", body: new Uint8Array(data) });
      await res.arrayBuffer();
      return res.status;
    };
    const statuses = await Promise.all([pushChunked(), pushMono(), pushChunked(), pushMono()]);
    assert.deepEqual(statuses, [201, 201, 201, 201]);
    const res = await req(`${reg.url}/v2/${repo}/blobs/${digest}`);
    assert.equal(res.status, 200);
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(body.length, data.length);
    assert.equal(sha256(body), digest, "stored blob verifies");
  });

  it("the same blob pushed to two repositories at once is readable from both", async () => {
    const data = randomBytes(512 * 1024);
    const digest = sha256(data);
    const repos = [uid("conc/"), uid("conc/"), uid("conc/")];
    await Promise.all(
      repos.map(async (repo) => {
        const res = await req(`${reg.url}/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: "POST", body: new Uint8Array(data) });
        if (res.status === 202) {
          const put = await req(withQuery(resolveLocation(reg.url, res), { digest }), { method: "PUT", body: new Uint8Array(data) });
          assert.equal(put.status, 201);
        } else assert.equal(res.status, 201);
      }),
    );
    for (const repo of repos) {
      const res = await req(`${reg.url}/v2/${repo}/blobs/${digest}`);
      assert.equal(sha256(Buffer.from(await res.arrayBuffer())), digest, repo);
    }
  });

  it("two clients PUTting the same tag at once: the tag ends on one of them, both GETtable by digest", async () => {
    const repo = uid("conc/");
    for (let round = 0; round < 5; round++) {
      const a = Buffer.from(JSON.stringify(await makeImage(reg.url, repo)));
      const b = Buffer.from(JSON.stringify(await makeImage(reg.url, repo)));
      const [ra, rb] = await Promise.all([
        putManifest(reg.url, repo, "race", a, OCI_MANIFEST),
        putManifest(reg.url, repo, "race", b, OCI_MANIFEST),
      ]);
      assert.equal(ra.status, 201, await ra.text());
      assert.equal(rb.status, 201, await rb.text());
      const tagged = await req(`${reg.url}/v2/${repo}/manifests/race`, { headers: { Accept: OCI_MANIFEST } });
      const digest = tagged.headers.get("docker-content-digest");
      const body = Buffer.from(await tagged.arrayBuffer());
      assert.ok(digest === sha256(a) || digest === sha256(b), "tag points at one of the two");
      assert.equal(sha256(body), digest, "served body matches its digest");
      for (const m of [a, b]) {
        const res = await req(`${reg.url}/v2/${repo}/manifests/${sha256(m)}`, { headers: { Accept: OCI_MANIFEST } });
        assert.equal(res.status, 200);
        assert.ok(Buffer.from(await res.arrayBuffer()).equals(m));
      }
      const tags = (await (await req(`${reg.url}/v2/${repo}/tags/list`)).json()) as { tags: string[] };
      assert.deepEqual(tags.tags, ["race"]);
    }
  });

  it("the same manifest pushed to many tags at once: every tag resolves", async () => {
    const repo = uid("conc/");
    const bytes = Buffer.from(JSON.stringify(await makeImage(reg.url, repo)));
    const names = Array.from({ length: 12 }, (_, i) => `t${i}`);
    const results = await Promise.all(names.map((t) => putManifest(reg.url, repo, t, bytes, OCI_MANIFEST)));
    for (const r of results) assert.equal(r.status, 201);
    const tags = (await (await req(`${reg.url}/v2/${repo}/tags/list`)).json()) as { tags: string[] };
    assert.deepEqual([...tags.tags].sort(), [...names].sort());
  });

  it("concurrent PATCHes to one session: the session is never corrupted (each is accepted in order or refused)", async () => {
    const repo = uid("conc/");
    const { url } = await startUpload(reg.url, repo);
    const part = randomBytes(100_000);
    const results = await Promise.all(
      [0, 1].map(() =>
        req(url, {
          method: "PATCH",
          headers: { "Content-Type": "application/octet-stream", "Content-Range": `0-${part.length - 1}` },
          body: new Uint8Array(part),
        }),
      ),
    );
    const statuses = results.map((r) => r.status).sort();
    for (const r of results) await r.arrayBuffer();
    assert.ok(statuses.includes(202), `one chunk was accepted: ${statuses}`);
    for (const s of statuses) assert.ok(s === 202 || s === 416 || s === 409 || s === 400, `got ${s}`);
    const status = await req(url);
    assert.equal(status.status, 204);
    const range = status.headers.get("range");
    const accepted = statuses.filter((s) => s === 202).length;
    if (accepted === 1) {
      assert.equal(range, `0-${part.length - 1}`);
      const done = await req(withQuery(url, { digest: sha256(part) }), { method: "PUT" });
      assert.equal(done.status, 201, "the upload completes with exactly one copy of the chunk");
    }
  });
});

describe("restart", () => {
  it("an upload started before a restart continues and completes afterwards, and the blob verifies", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-restart-"));
    try {
      const repo = uid("restart/");
      const data = randomBytes(300_000);
      const digest = sha256(data);
      let reg = await startTestRegistry({}, dir);
      const { url } = await startUpload(reg.url, repo);
      const first = await req(url, {
        method: "PATCH",
        headers: { "Content-Type": "application/octet-stream", "Content-Range": `0-99999` },
        body: new Uint8Array(data.subarray(0, 100_000)),
      });
      assert.equal(first.status, 202);
      await first.arrayBuffer();
      const path = new URL(resolveLocation(reg.url, first));
      await reg.close();

      reg = await startTestRegistry({}, dir);
      try {
        const base = `${reg.url}${path.pathname}${path.search}`;
        const status = await req(base);
        assert.equal(status.status, 204, "the session is still known after the restart");
        assert.equal(status.headers.get("range"), "0-99999");
        const next = resolveLocation(reg.url, status);
        const second = await req(next, {
          method: "PATCH",
          headers: { "Content-Type": "application/octet-stream", "Content-Range": `100000-${data.length - 1}` },
          body: new Uint8Array(data.subarray(100_000)),
        });
        assert.equal(second.status, 202, await second.clone().text());
        const done = await req(withQuery(resolveLocation(reg.url, second), { digest }), { method: "PUT" });
        assert.equal(done.status, 201, await done.clone().text());
        const pulled = await req(`${reg.url}/v2/${repo}/blobs/${digest}`);
        assert.equal(sha256(Buffer.from(await pulled.arrayBuffer())), digest);
      } finally {
        await reg.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("blobs, manifests and tags survive a restart", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-restart-"));
    try {
      const repo = uid("restart/");
      let reg = await startTestRegistry({}, dir);
      const pushed = await pushManifest(reg.url, repo, "keep", await makeImage(reg.url, repo), OCI_MANIFEST);
      await reg.close();
      reg = await startTestRegistry({}, dir);
      try {
        const res = await req(`${reg.url}/v2/${repo}/manifests/keep`, { headers: { Accept: OCI_MANIFEST } });
        assert.equal(res.status, 200);
        assert.ok(Buffer.from(await res.arrayBuffer()).equals(pushed.bytes));
      } finally {
        await reg.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("stale upload purge", () => {
  it("sessions idle longer than uploads.purgeAfter are purged (404 BLOB_UPLOAD_UNKNOWN); fresh ones are kept", async () => {
    const reg = await startTestRegistry({ uploads: { purgeAfter: "300ms", purgeInterval: "1h" } });
    try {
      const repo = uid("purge/");
      const stale = await startUpload(reg.url, repo);
      await new Promise((resolve) => setTimeout(resolve, 600));
      const fresh = await startUpload(reg.url, repo);
      const purged = await reg.registry.purgeUploads();
      assert.ok(purged >= 1, `purged ${purged}`);
      await expectError(await req(stale.url), 404, "BLOB_UPLOAD_UNKNOWN");
      const ok = await req(fresh.url);
      assert.equal(ok.status, 204);
    } finally {
      await reg.close();
    }
  });
});
