/**
 * An upload session has one writer at a time across processes (hardening
 * defect 1). Two PATCHes with the same Content-Range and different bodies
 * race on one session of `ferry serve --workers 2`; whatever happens, the
 * blob stored under sha256(X) must hold X: a commit never leaves a blob whose
 * bytes differ from its name, and an honest push of X elsewhere then reads X.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { request as httpRequest } from "node:http";
import { readBlobFiles, startServeProcess } from "../helpers/serve-process.js";
import { startTestRegistry } from "../helpers/registry.js";

const SIZE = 8 * 1024 * 1024;

function sha256(bytes: Buffer): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** A PATCH on its own connection (so the two land on different workers), resolving to its status. */
function patch(url: string, body: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(
      url,
      {
        method: "PATCH",
        agent: false,
        headers: {
          "Content-Type": "application/octet-stream",
          "Content-Range": `0-${body.length - 1}`,
          "Content-Length": String(body.length),
        },
      },
      (response) => {
        response.resume();
        response.once("end", () => resolve(response.statusCode ?? 0));
      },
    );
    request.once("error", reject);
    // Two writes so that both requests are mid-body at the same time.
    request.write(body.subarray(0, body.length / 2));
    setTimeout(() => request.end(body.subarray(body.length / 2)), 20);
  });
}

async function race(base: string, repo: string, x: Buffer, y: Buffer): Promise<{ statuses: number[]; put: number }> {
  const start = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: "POST" });
  assert.equal(start.status, 202);
  const location = new URL(start.headers.get("location")!, base).toString();
  const statuses = await Promise.all([patch(location, x), patch(location, y)]);
  const put = await fetch(`${location}${location.includes("?") ? "&" : "?"}digest=${sha256(x)}`, { method: "PUT" });
  await put.arrayBuffer();
  return { statuses, put: put.status };
}

async function assertBlobHolds(base: string, repo: string, bytes: Buffer, context: string): Promise<void> {
  const response = await fetch(`${base}/v2/${repo}/blobs/${sha256(bytes)}`);
  if (response.status === 404) return;
  assert.equal(response.status, 200, context);
  const got = Buffer.from(await response.arrayBuffer());
  assert.equal(sha256(got), sha256(bytes), `${context}: the blob named ${sha256(bytes)} holds other bytes`);
}

// Worker processes, or the serving threads of one process (the shipped default on a multi-core machine).
for (const mode of [{ name: "worker processes", workers: 2, threads: 1 }, { name: "serving threads", threads: 2 }]) {
test(`two PATCHes racing on one session across ${mode.name} never poison a digest`, async (t) => {
  const data = await mkdtemp(join(tmpdir(), "ferry-ownership-"));
  const server = await startServeProcess({ data, workers: mode.workers, threads: mode.threads });
  t.after(async () => {
    await server.stop();
    await rm(data, { recursive: true, force: true });
  });
  const outcomes: string[] = [];
  for (let attempt = 0; attempt < 6; attempt++) {
    const x = randomBytes(SIZE);
    const y = randomBytes(SIZE);
    const repo = `race/a${attempt}`;
    const { statuses, put } = await race(server.url, repo, x, y);
    outcomes.push(`${statuses.join("/")} -> ${put}`);
    // Exactly one PATCH may win the session; the other is refused with 416.
    assert.ok(statuses.includes(202) || statuses.every((s) => s === 416), `attempt ${attempt}: ${statuses}`);
    assert.ok(statuses.filter((s) => s === 202).length <= 1, `attempt ${attempt}: both PATCHes were accepted (${statuses})`);
    assert.ok(put === 201 || put === 400, `attempt ${attempt}: PUT answered ${put}`);
    await assertBlobHolds(server.url, repo, x, `attempt ${attempt}`);
    // An honest push of X to another repository reads back X.
    const honest = await fetch(`${server.url}/v2/honest/a${attempt}/blobs/uploads/?digest=${sha256(x)}`, { method: "POST", body: new Uint8Array(x) });
    assert.equal(honest.status, 201);
    await assertBlobHolds(server.url, `honest/a${attempt}`, x, `honest push ${attempt}`);
  }
  // Every blob file on disk holds the bytes its name says.
  for (const { digest, bytes } of await readBlobFiles(data)) assert.equal(sha256(bytes), digest, "blob file content matches its name");
  t.diagnostic(`outcomes: ${outcomes.join(", ")}`);
});
}

test("a session held by another registry instance answers 416 with its size, then is usable again", async (t) => {
  // Two registries over one data directory stand for two processes: their
  // session leases meet only in the metadata store.
  const first = await startTestRegistry();
  t.after(() => first.close());
  const second = await startTestRegistry({}, first.dataDir);
  t.after(() => second.close());
  const start = await fetch(`${first.url}/v2/lease/a/blobs/uploads/`, { method: "POST" });
  const path = start.headers.get("location")!;
  const x = randomBytes(SIZE);
  // A slow writer on the first instance: headers and half the body, then a pause.
  const slow = new Promise<number>((resolve, reject) => {
    const request = httpRequest(new URL(path, first.url), {
      method: "PATCH",
      agent: false,
      headers: { "Content-Range": `0-${SIZE - 1}`, "Content-Length": String(SIZE) },
    }, (response) => {
      response.resume();
      response.once("end", () => resolve(response.statusCode ?? 0));
    });
    request.once("error", reject);
    request.write(x.subarray(0, SIZE / 2));
    setTimeout(() => request.end(x.subarray(SIZE / 2)), 3_000);
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  // Completing the session on the other instance while the first is still writing must not commit half of X.
  const intruder = await fetch(new URL(`${path}${path.includes("?") ? "&" : "?"}digest=${sha256(x)}`, second.url), { method: "PUT" });
  assert.equal(intruder.status, 416, "a second writer is refused while the first holds the session");
  assert.match(intruder.headers.get("range") ?? "", /^0-\d+$/);
  const body = (await intruder.json()) as { errors: Array<{ code: string }> };
  assert.equal(body.errors[0]!.code, "BLOB_UPLOAD_INVALID");
  assert.equal(await slow, 202);
  // The session is free again, on either instance: completing it stores X.
  const put = await fetch(new URL(`${path}${path.includes("?") ? "&" : "?"}digest=${sha256(x)}`, second.url), { method: "PUT" });
  assert.equal(put.status, 201);
  const stored = await readFile(join(first.dataDir, "blobs", "sha256", sha256(x).slice(7, 9), sha256(x).slice(7)));
  assert.equal(sha256(stored), sha256(x));
});
