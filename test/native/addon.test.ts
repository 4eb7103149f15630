/**
 * The optional native addon loads where it was built (in CI it must), and its
 * allocator setting behaves: glibc takes the trim threshold, bad values throw.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { keepFreedHeapMapped, loadNativeAddon } from "../../src/native/addon.js";

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
