/**
 * README: "Stopping: Ctrl-C or SIGTERM closes the listener and finishes what is
 * in flight." A user who pressed Ctrl-C saw nothing at all: no sign the stop was
 * clean or that it was still draining. The stop is now two JSON log lines,
 * once per server (not once per worker), and the exit code is 0.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort } from "../helpers/serve-process.js";

const FERRY = resolve("dist/src/cli/main.js");

async function stopOnce(workers: number): Promise<{ code: number | null; lines: Array<{ msg: string; signal?: string; ms?: number }> }> {
  const data = await mkdtemp(join(tmpdir(), "ferry-stop-"));
  try {
    const port = await freePort();
    const child = spawn(process.execPath, [FERRY, "serve", "--listen", `127.0.0.1:${port}`, "--data", data, "--workers", String(workers)], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { PATH: process.env.PATH ?? "" },
    });
    let out = "";
    child.stdout!.on("data", (chunk: Buffer) => (out += chunk.toString()));
    const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
    for (let i = 0; !(await fetch(`http://127.0.0.1:${port}/v2/`).then((r) => r.ok, () => false)); i++) {
      assert.ok(i < 600 && child.exitCode === null, "ferry serve did not start");
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill("SIGTERM");
    const code = await exited;
    const lines = out.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { msg: string; signal?: string; ms?: number });
    return { code, lines: lines.filter((l) => l.msg.startsWith("ferry stop")) };
  } finally {
    await rm(data, { recursive: true, force: true });
  }
}

test("SIGTERM on one process logs 'stopping' with the signal, then 'stopped', and exits 0", async () => {
  const { code, lines } = await stopOnce(1);
  assert.equal(code, 0);
  assert.deepEqual(lines.map((l) => l.msg.split(":")[0]), ["ferry stopping", "ferry stopped"]);
  assert.equal(lines[0]!.signal, "SIGTERM");
  assert.equal(typeof lines[1]!.ms, "number");
});

test("with --workers 2 the stop is told once, by the primary", async () => {
  const { code, lines } = await stopOnce(2);
  assert.equal(code, 0);
  assert.deepEqual(lines.map((l) => l.msg.split(":")[0]), ["ferry stopping", "ferry stopped"]);
});
