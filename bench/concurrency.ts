// Bounded-concurrency loops shared by loaders and workloads.

/**
 * Runs task(0..count-1) with at most `concurrency` in flight. On the first
 * failure no new tasks start and the error is rethrown once in-flight ones settle.
 */
export async function forEachIndex(
  count: number,
  concurrency: number,
  task: (index: number, worker: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (w: number): Promise<void> => {
    while (!failure && next < count) {
      const i = next++;
      try {
        await task(i, w);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, (_, w) => worker(w)));
  if (failure) throw failure.error;
}

/**
 * Runs `concurrency` workers that repeat task() until the deadline; a task
 * started before the deadline is allowed to finish (so each worker completes
 * at least one). Returns the elapsed wall time in seconds.
 */
export async function untilDeadline(
  seconds: number,
  concurrency: number,
  task: (worker: number, iteration: number) => Promise<void>,
): Promise<number> {
  const start = performance.now();
  const deadline = start + seconds * 1000;
  let failure: { error: unknown } | undefined;
  const worker = async (w: number): Promise<void> => {
    for (let i = 0; !failure && (i === 0 || performance.now() < deadline); i++) {
      try {
        await task(w, i);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  if (failure) throw failure.error;
  return (performance.now() - start) / 1000;
}
