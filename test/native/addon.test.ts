/**
 * The optional native addon loads where it was built (in CI it must), and its
 * allocator setting behaves: glibc takes the trim threshold, bad values throw.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyIntoShared, discardPages, keepFreedHeapMapped, loadNativeAddon } from "../../src/native/addon.js";

const state = loadNativeAddon();
const skip = "reason" in state ? state.reason : false;
if (skip && process.env.REQUIRE_E2E_TOOLS === "1") throw new Error(`native addon required in CI: ${skip}`);

test("on glibc the allocator keeps freed heap mapped", { skip }, () => {
  const isGlibc = Boolean((process.report?.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime);
  assert.equal(keepFreedHeapMapped(), isGlibc);
});

test("setTrimThreshold refuses values that are not a byte count", { skip }, () => {
  if (!("addon" in state)) return;
  assert.throws(() => state.addon.setTrimThreshold(-1), TypeError);
  assert.throws(() => state.addon.setTrimThreshold(2 ** 40), TypeError);
});

test("trimFreedHeap gives back heap pages that freed blocks below a live one keep resident", { skip }, () => {
  // What concurrent pushes leave behind: many 64 KiB body chunks in glibc's heap, freed, with a
  // block still live above them, so the trim threshold (top of the heap only) cannot return them.
  const addonUrl = new URL("../../src/native/addon.js", import.meta.url).href;
  const script = `
    import { readFileSync } from "node:fs";
    import { setTimeout as sleep } from "node:timers/promises";
    import { keepFreedHeapMapped, trimFreedHeap } from ${JSON.stringify(addonUrl)};
    keepFreedHeapMapped();
    const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(readFileSync("/proc/self/status", "utf8"))[1]) / 1024;
    let chunks = Array.from({ length: 1280 }, () => Buffer.allocUnsafeSlow(64 * 1024).fill(1));
    const pin = Buffer.allocUnsafeSlow(64 * 1024).fill(2);
    chunks = null;
    gc();
    await sleep(300);
    const before = rss();
    const released = trimFreedHeap();
    console.log(JSON.stringify({ before, after: rss(), released, pin: pin[0] }));
  `;
  const child = spawnSync(process.execPath, ["--expose-gc", "--input-type=module", "-e", script], { encoding: "utf8", timeout: 30_000 });
  assert.equal(child.status, 0, child.stderr);
  const { before, after, released } = JSON.parse(child.stdout) as { before: number; after: number; released: boolean };
  const isGlibc = Boolean((process.report?.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime);
  if (!isGlibc) return assert.equal(released, false);
  assert.equal(released, true);
  // 80 MiB were freed; at least 60 of it must leave the resident set.
  assert.ok(before - after > 60, `RSS ${before.toFixed(1)} -> ${after.toFixed(1)} MiB`);
});

test("discardPages drops whole pages only: their bytes read as zeros, the partial pages at the edges keep theirs", { skip }, () => {
  const memory = Buffer.from(new WebAssembly.Memory({ initial: 2, maximum: 2 }).buffer); // 128 KiB, page aligned
  memory.fill(7);
  // 100 bytes into the first page to 100 bytes before the end: whole pages 1..30 of 32.
  const view = memory.subarray(100, memory.length - 100);
  assert.equal(discardPages(view), 30 * 4096);
  assert.ok(memory.subarray(0, 4096).every((byte) => byte === 7), "the first, partial page lost its bytes");
  assert.ok(memory.subarray(4096, memory.length - 4096).every((byte) => byte === 0));
  assert.ok(memory.subarray(memory.length - 4096).every((byte) => byte === 7), "the last, partial page lost its bytes");
  assert.equal(discardPages(new Uint8Array(100)), 0, "no whole page in it");
  if ("addon" in state) assert.throws(() => state.addon.discardPages!({} as Uint8Array), TypeError);
});

test("copyIntoShared copies into a SharedArrayBuffer and refuses what does not fit", { skip }, () => {
  const slab = new Uint8Array(new SharedArrayBuffer(64));
  const source = Buffer.from("pushed bytes");
  copyIntoShared(slab, 50, source);
  assert.equal(Buffer.from(slab.subarray(50, 62)).toString(), "pushed bytes");
  assert.ok(slab.subarray(0, 50).every((byte) => byte === 0));
  copyIntoShared(slab, 64, new Uint8Array(0));
  assert.throws(() => copyIntoShared(slab, 53, source), RangeError);
  assert.throws(() => copyIntoShared(slab, -1, source), RangeError);
  assert.equal(Buffer.from(slab.subarray(50, 62)).toString(), "pushed bytes", "a refused copy wrote nothing");
});
