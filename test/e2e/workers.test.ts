/**
 * `ferry serve --workers 2`: two processes over one data directory must take
 * concurrent pushes without a single 5xx, and each must see the other's writes.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:net";
import { randomBytes } from "node:crypto";
import { buildImage, sha256 } from "../helpers/images.js";

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

test("two worker processes share one data directory under concurrent pushes", async (t) => {
  const data = await mkdtemp(join(tmpdir(), "ferry-workers-"));
  const port = await freePort();
  const child = spawn(process.execPath, ["dist/src/cli/main.js", "serve", "--workers", "2", "--listen", `127.0.0.1:${port}`, "--data", data], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { PATH: process.env.PATH ?? "", FERRY_LOG__LEVEL: "error" },
  });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  t.after(async () => {
    child.kill("SIGTERM");
    await new Promise((resolve) => child.once("exit", resolve));
    await rm(data, { recursive: true, force: true });
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    const ok = await fetch(`${url}/v2/`).then((r) => r.ok, () => false);
    if (ok) break;
    if (i > 100) assert.fail(`server did not start: ${stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }

  const statuses: number[] = [];
  const pushes = Array.from({ length: 24 }, async (_, i) => {
    // Distinct repositories and blobs, plus one blob everybody pushes at once.
    const repo = `workers/r${i % 6}`;
    for (const bytes of [randomBytes(64 * 1024), Buffer.from("shared by every client")]) {
      const response = await fetch(`${url}/v2/${repo}/blobs/uploads/?digest=${sha256(bytes)}`, { method: "POST", body: new Uint8Array(bytes) });
      statuses.push(response.status);
      await response.arrayBuffer();
    }
    const image = await buildImage({ layers: [{ f: `image ${i}` }] });
    for (const blob of [image.config, ...image.layers]) {
      const response = await fetch(`${url}/v2/${repo}/blobs/uploads/?digest=${blob.digest}`, { method: "POST", body: new Uint8Array(blob.bytes) });
      statuses.push(response.status);
      await response.arrayBuffer();
    }
    const put = await fetch(`${url}/v2/${repo}/manifests/t${i}`, { method: "PUT", headers: { "Content-Type": image.mediaType }, body: new Uint8Array(image.manifest) });
    statuses.push(put.status);
    await put.arrayBuffer();
  });
  await Promise.all(pushes);
  assert.deepEqual([...new Set(statuses)], [201], `every push answered 201; stderr: ${stderr.slice(0, 2000)}`);

  // Whichever worker answers, it sees every tag.
  for (let i = 0; i < 6; i++) {
    const tags = (await (await fetch(`${url}/v2/workers/r${i}/tags/list`)).json()) as { tags: string[] };
    assert.equal(tags.tags.length, 4, `repository r${i}`);
  }
});
