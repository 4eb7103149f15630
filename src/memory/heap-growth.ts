/**
 * How far V8 lets the old generation grow past what the last full GC found
 * live. V8's own factor adapts between 1.1 and 4 and under a steady request
 * load settles near 4: in the benchmark's mix ~19 MB were live after each
 * full GC while the old space grew to ~72 MB (and ~37 MB of buffers whose
 * wrappers had been promoted waited for that GC too) before it collected
 * again. A factor of 2 is the policy of the Go runtime the reference registry
 * runs on (GOGC=100). Measured in docs/benchmarks-history.md ("Speed round 4"):
 * the mix's peak heap falls from ~107 to ~72 MB, at no measurable CPU per
 * cached request (little survives a scavenge there; the extra full GCs mark
 * ~19 MB each).
 *
 * Set from inside the process, not on the node command line, so it holds
 * however `ferry serve` is launched (the bin, the documented service unit's
 * `node .../main.js serve`, a container, the test helpers). V8 reads this
 * flag each time it sizes the heap after a GC, so setting it at start-up,
 * before the registry allocates anything, takes effect. An operator's own
 * `--heap-growing-percent` on the node command line wins (Node 20 refuses
 * that V8 flag in NODE_OPTIONS; the check reads NODE_OPTIONS too, for a Node
 * that allows it).
 *
 * While a large body streams through JavaScript the factor is raised for a
 * while (streaming-heap.ts): the short-lived buffers of a stream count
 * against the same limit.
 */
import v8 from "node:v8";

export const HEAP_GROWING_PERCENT = 100;

/** The growth an operator chose on the node command line (or in NODE_OPTIONS, where a Node allows it), or null. */
export function chosenHeapGrowth(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ""): number | null {
  const chosen = [...execArgv, ...nodeOptions.split(/\s+/)].map((arg) => /^--heap[-_]growing[-_]percent=(\d+)$/.exec(arg)).find((m) => m !== null);
  return chosen ? Number(chosen[1]) : null;
}

/** Applies the growth policy unless the operator chose one; returns the value in force (0 = V8's adaptive default). */
export function limitHeapGrowth(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ""): number {
  const chosen = chosenHeapGrowth(execArgv, nodeOptions);
  if (chosen !== null) return chosen;
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  return HEAP_GROWING_PERCENT;
}
