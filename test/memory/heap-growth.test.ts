/**
 * `ferry serve` caps how far V8's old generation may grow past the data that
 * was live at the last full GC (src/memory/heap-growth.ts), by setting a V8
 * flag from inside the running process. These tests check that the setting
 * really changes V8's behaviour when applied that way (a Node upgrade that
 * stopped reading the flag at run time would make the policy a silent no-op),
 * and that an operator's own choice on the command line is left alone.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { HEAP_GROWING_PERCENT, limitHeapGrowth } from "../../src/memory/heap-growth.js";

const MODULE = fileURLToPath(new URL("../../src/memory/heap-growth.js", import.meta.url));

/**
 * ~20 MB stay live; a ring of 100k objects makes every object survive a few
 * scavenges, so it is promoted and then dies in the old generation: the
 * pattern of requests in flight while the young generation is collected.
 * Prints the largest old-space size seen, in MiB.
 */
const CHURN = `
import v8 from "node:v8";
if (process.argv[1] === "apply") (await import(${JSON.stringify(MODULE)})).limitHeapGrowth();
const live = [];
for (let i = 0; i < 200000; i++) live.push({ i, s: "x" + i, a: [i, i] });
const ring = new Array(100000);
let max = 0;
for (let i = 0; i < 3000000; i++) {
  ring[i % 100000] = { i, s: "y" + i, a: [i, i, i] };
  if (i % 10000 === 0) max = Math.max(max, v8.getHeapSpaceStatistics().find((s) => s.space_name === "old_space").space_size);
}
console.log(String(max / 2 ** 20 + live.length * 0));
`;

function peakOldSpaceMiB(mode: "apply" | "v8-default"): number {
  const out = execFileSync(process.execPath, ["--input-type=module", "-e", CHURN, mode], { encoding: "utf8", timeout: 60_000 });
  return Number(out.trim());
}

describe("heap growth policy", () => {
  it("applied at run time, keeps the old generation well below what V8 grows to on its own", () => {
    const capped = peakOldSpaceMiB("apply");
    const adaptive = peakOldSpaceMiB("v8-default");
    // Measured on Node 20: ~108 against ~200 MiB. A policy that did not take effect would give the same peak.
    assert.ok(capped < adaptive * 0.75, `old space peaked at ${capped.toFixed(1)} MiB with the policy, ${adaptive.toFixed(1)} MiB without`);
  });

  it("leaves an operator's --heap-growing-percent alone", () => {
    assert.equal(limitHeapGrowth(["--heap-growing-percent=30"], ""), 30);
    assert.equal(limitHeapGrowth([], "--max-old-space-size=512 --heap_growing_percent=250"), 250);
  });

  it("uses a factor of 2 (Go's GOGC=100) otherwise", () => {
    assert.equal(HEAP_GROWING_PERCENT, 100);
    assert.equal(limitHeapGrowth([], ""), HEAP_GROWING_PERCENT);
  });
});
