/**
 * With `--workers N` the processes share one metadata store: concurrent pulls
 * of one uncached blob landing on different workers still fetch it from the
 * upstream once (a lease in the metadata store), and every client gets it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "node:http";
import { FakeUpstream } from "./fake-upstream.js";
import { startServeProcess } from "../helpers/serve-process.js";

/** A GET on a fresh connection each time, so the cluster spreads them over its workers. */
function getFresh(url: string): Promise<{ status: number; digest: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      const hash = createHash("sha256");
      let bytes = 0;
      res.on("data", (chunk: Buffer) => {
        hash.update(chunk);
        bytes += chunk.length;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, digest: `sha256:${hash.digest("hex")}`, bytes }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

// Two processes (`--workers 2`) or two serving threads of one process (`--threads 2`): the same single flight.
for (const mode of [{ name: "two workers", workers: 2, threads: 1 }, { name: "two serving threads", threads: 2 }]) {
test(`${mode.name}, 8 concurrent pulls of one uncached blob: one upstream fetch, every client gets the bytes`, { timeout: 120_000 }, async (t) => {
  const upstream = await new FakeUpstream().start();
  t.after(() => upstream.close());
  const bytes = randomBytes(20 * 1024 * 1024);
  const digest = upstream.addBlob("shared", bytes);
  upstream.pace = { chunk: 512 * 1024, delayMs: 20 };
  const dir = await mkdtemp(join(tmpdir(), "ferry-mirror-workers-"));
  let server: Awaited<ReturnType<typeof startServeProcess>> | undefined;
  // One hook, in this order: the directory goes only once the server stopped writing to it.
  t.after(async () => {
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
  });
  await writeFile(join(dir, "config.yml"), `mirrors:\n  - prefix: m/\n    upstream: ${upstream.url}\n`);
  server = await startServeProcess({ data: join(dir, "data"), workers: mode.workers, threads: mode.threads, args: ["--config", join(dir, "config.yml")] });
  const url = `${server.url}/v2/m/shared/blobs/${digest}`;
  const running = server;
  // Should take seconds: if it does not, the server's log says why (the test's timeout then fails it).
  const timer = setTimeout(() => process.stderr.write(`mirror workers test still waiting; server log: ${running.stderr().slice(-3000)}\n`), 30_000);
  const results = await Promise.all(Array.from({ length: 8 }, () => getFresh(url)));
  clearTimeout(timer);
  for (const result of results) assert.deepEqual(result, { status: 200, digest, bytes: bytes.length });
  assert.equal(upstream.count("GET", "/blobs/"), 1, `one upstream fetch across ${mode.name}`);
});
}
