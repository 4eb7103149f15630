/**
 * The audit file writer: bounded while the disk does not keep up (a FIFO
 * nobody reads stands for a stalled disk), honest about what it dropped, and
 * whole lines when several writers (as with --workers N) append to one file.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, constants, createReadStream, openSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setImmediate as tick, setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { AuditLog } from "../../src/audit/audit-log.js";

const silent = pino({ level: "silent" });

test("a stalled disk does not grow memory: lines beyond the queue are dropped, and the next line written says how many", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "ferry-audit-log-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const fifo = join(dir, "audit.fifo");
  execFileSync("mkfifo", [fifo]);
  // A reader that reads nothing yet: the writer can open the FIFO, and its writes stall once the pipe is full.
  const idleReader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const log = new AuditLog({ path: fifo, maxQueueBytes: 64 * 1024, logger: silent });
  const pad = "x".repeat(1000);
  let appended = 0;
  for (let round = 0; round < 40; round++) {
    for (let i = 0; i < 50; i++) log.append({ action: "push", n: appended++, pad });
    await tick();
  }

  const chunks: Buffer[] = [];
  const reader = createReadStream(fifo);
  reader.on("data", (chunk) => chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve) => reader.once("end", () => resolve()));
  while (chunks.length === 0) await sleep(20);
  await sleep(200);
  log.append({ action: "after" });
  await log.close();
  closeSync(idleReader);
  await ended;

  const lines = Buffer.concat(chunks).toString("utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  const pushes = lines.filter((l) => l.action === "push");
  const notices = lines.filter((l) => l.action === "audit.dropped");
  // A notice precedes the first line written after drops (more than one when the pipe drained a little between them).
  assert.ok(notices.length >= 1);
  const dropped = notices.reduce((sum, l) => sum + Number(l.count), 0);
  // Pipe (64 KiB) plus queue (64 KiB) hold about 130 of the 2000 one-KiB lines: the rest is dropped, not buffered.
  assert.ok(pushes.length < 300, `${pushes.length} lines were kept for a stalled disk`);
  assert.equal(pushes.length + dropped, 2000);
  assert.deepEqual(lines.at(-1), { action: "after" });
  assert.equal(lines.at(-2)!.action, "audit.dropped");
  // What was kept is in order and whole.
  const numbers = pushes.map((l) => Number(l.n));
  assert.deepEqual(numbers, [...numbers].sort((a, b) => a - b));
});

test("two writers appending to one file (as --workers N do) never interleave inside a line", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "ferry-audit-log-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, "audit.log");
  const writers = [new AuditLog({ path, maxQueueBytes: 64 * 1024 * 1024, logger: silent }), new AuditLog({ path, maxQueueBytes: 64 * 1024 * 1024, logger: silent })];
  for (let round = 0; round < 200; round++) {
    writers.forEach((writer, w) => {
      for (let i = 0; i < 10; i++) writer.append({ action: "push", writer: w, n: round * 10 + i, pad: String(w).repeat(100 + ((round * 37 + i * 101) % 8000)) });
    });
    await tick();
  }
  await Promise.all(writers.map((w) => w.close()));
  const lines = (await readFile(path, "utf8")).split("\n").filter(Boolean).map((l) => JSON.parse(l) as { writer: number; n: number; pad: string });
  assert.equal(lines.length, 4000);
  for (const w of [0, 1]) {
    const own = lines.filter((l) => l.writer === w);
    assert.equal(own.length, 2000);
    assert.ok(own.every((l) => l.pad === String(w).repeat(l.pad.length)));
    assert.deepEqual(own.map((l) => l.n), [...Array(2000).keys()]);
  }
});
