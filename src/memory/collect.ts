/**
 * Asking V8 for a collection from inside the process. Node offers no API for
 * it; `--expose-gc` can be set at run time and `gc` then taken from a fresh
 * context, so the main context's globals stay as they were. Where Node refuses
 * the flag, nothing is collected early: V8 collects on its own schedule.
 */
import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import { trimFreedHeap } from "../native/addon.js";

type GcFunction = (options?: { type: "minor" | "major" }) => void;

let gcFunction: GcFunction | null | undefined;

function gc(): GcFunction | null {
  if (gcFunction === undefined) {
    try {
      v8.setFlagsFromString("--expose-gc");
      gcFunction = runInNewContext("gc") as GcFunction;
    } catch {
      gcFunction = null;
    }
  }
  return gcFunction;
}

/** A young-generation collection (`full`: a whole-heap one), if this process can ask for it. */
export function collectGarbage(full = true): void {
  gc()?.(full ? undefined : { type: "minor" });
}

/**
 * After a burst of pushes: a collection frees the request-body chunks still
 * waiting for one (a young-generation one unless `full`: a full collection on
 * the small idle heap leaves V8 with an old-generation limit so low that the
 * next 100 MiB push ran ~110 ms more CPU, 410 against 300 ms, median of 7);
 * then the C heap those chunks grew is trimmed. glibc keeps free space inside
 * its heap resident (only the top above the trim threshold goes back), and
 * concurrent pushes leave it mostly free but pinned by a few live blocks.
 * The trim waits a second because V8 frees array buffer memory on a helper
 * thread after the collection.
 */
export function returnMemory(full: boolean): void {
  collectGarbage(full);
  setTimeout(trimFreedHeap, 1000).unref();
}
