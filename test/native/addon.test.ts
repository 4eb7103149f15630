/**
 * The optional native addon loads where it was built (in CI it must), and its
 * allocator setting behaves: glibc takes the trim threshold, bad values throw.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
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
