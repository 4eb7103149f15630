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
import { readFileSync, readdirSync } from "node:fs";
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

/** The stderr and exit code of a `ferry serve` run that is expected to stop by itself. */
async function runUntilExit(args: string[], env: Record<string, string>, timeoutMs: number): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, ["dist/src/cli/main.js", "serve", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { PATH: process.env.PATH ?? "", ...env },
  });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stderr };
}

test("--workers 2 on a port in use exits non-zero with the single-process message, once", async (t) => {
  const data = await mkdtemp(join(tmpdir(), "ferry-workers-"));
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", () => resolve()));
  const port = (blocker.address() as { port: number }).port;
  t.after(async () => {
    blocker.close();
    await rm(data, { recursive: true, force: true });
  });
  const args = ["--listen", `127.0.0.1:${port}`, "--data", data];
  // An unrelated FERRY_* variable must not be what stops it (defect 11): it is only a warning.
  const env = { FERRY_LOG__LEVEL: "error", FERRY_PROJECT: "acme" };
  const single = await runUntilExit(args, env, 15_000);
  const workers = await runUntilExit([...args, "--workers", "2"], env, 15_000);
  const expected = `ferry: listen EADDRINUSE: address already in use 127.0.0.1:${port}`;
  assert.notEqual(single.code, 0);
  assert.ok(single.stderr.includes(expected), single.stderr);
  assert.notEqual(workers.code, null, "the supervisor stopped by itself instead of restarting workers for ever");
  assert.notEqual(workers.code, 0);
  assert.equal(workers.stderr.split(expected).length - 1, 1, `the message once: ${workers.stderr}`);
  for (const run of [single, workers]) {
    assert.equal(run.stderr.match(/FERRY_PROJECT/g)?.length, 1, `one warning naming FERRY_PROJECT: ${run.stderr}`);
  }
});

test("a worker that dies while serving is replaced; the log line names it with workerPid, pid once", async (t) => {
  const data = await mkdtemp(join(tmpdir(), "ferry-workers-"));
  const port = await freePort();
  const child = spawn(process.execPath, ["dist/src/cli/main.js", "serve", "--workers", "2", "--listen", `127.0.0.1:${port}`, "--data", data], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { PATH: process.env.PATH ?? "", FERRY_LOG__LEVEL: "warn" },
  });
  let stdout = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  t.after(async () => {
    child.kill("SIGTERM");
    await new Promise((resolve) => child.once("exit", resolve));
    await rm(data, { recursive: true, force: true });
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; !(await fetch(`${url}/v2/`).then((r) => r.ok, () => false)); i++) {
    if (i > 100) assert.fail("server did not start");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  // Workers start one after another: the second may still be forking when the first answers.
  for (let i = 0; childrenOf(child.pid!).length < 2; i++) {
    if (i > 100) assert.fail(`two workers: ${childrenOf(child.pid!).join(",")}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  // The first forked (lowest pid) is the one that answered; the second may still be starting, and a worker that
  // dies during start-up stops the supervisor instead (CI once killed that one: /proc lists in no set order).
  const workers = childrenOf(child.pid!).sort((a, b) => a - b);
  assert.equal(workers.length, 2, `two workers: ${workers.join(",")}`);
  process.kill(workers[0]!, "SIGKILL");
  for (let i = 0; !stdout.includes("worker died"); i++) {
    if (i > 50) assert.fail(`no worker-death line: ${stdout}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const line = stdout.split("\n").find((l) => l.includes("worker died"))!;
  assert.equal(line.match(/"pid":/g)?.length, 1, line);
  assert.equal((JSON.parse(line) as { workerPid: number }).workerPid, workers[0]);
  for (let i = 0; childrenOf(child.pid!).length < 2; i++) {
    if (i > 50) assert.fail("the dead worker was not replaced");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  // Workers start one after another, so right after the kill the replacement (or the second worker) may
  // still be starting: the registry must answer again within a few seconds, not necessarily at once.
  for (let i = 0; !(await fetch(`${url}/v2/`).then((r) => r.status === 200, () => false)); i++) {
    if (i > 100) assert.fail("the registry did not serve again after a worker died");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
});

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // the process ended meanwhile
    }
  }
  return out;
}
