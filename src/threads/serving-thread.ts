/**
 * One extra serving thread of `ferry serve` (src/threads/serving-threads.ts
 * starts them). It runs the same full registry as the main thread, over the
 * same configuration and data, on a listening socket of its own on the same
 * port (SO_REUSEPORT, src/threads/listen.ts): the kernel spreads new
 * connections over the threads' sockets.
 * Scheduled jobs (garbage collection, upload purging) run on the main thread
 * only; everything shared between threads goes through the metadata store,
 * exactly as between `--workers` processes.
 */
import { parentPort, workerData } from "node:worker_threads";
import { isMessage, type ThreadData, type ToMain, type ToThread } from "./messages.js";

const port = parentPort!;
const data = workerData as ThreadData;
const post = (message: ToMain) => port.postMessage(message);

async function main(): Promise<void> {
  const { configFromFlags } = await import("../cli/server-config.js");
  const { createLogger, startRegistry } = await import("../server.js");
  const { openThreadSocket } = await import("./listen.js");
  const config = configFromFlags(data.flags);
  const logger = createLogger(config);
  // The heap's growth policy is the process's (set by the main thread), and so is the count of streams (src/memory/streaming-heap.ts).
  const { enableStreamingRoom } = await import("../memory/streaming-heap.js");
  enableStreamingRoom(data.streamingState);
  let registry: Awaited<ReturnType<typeof startRegistry>>;
  let nextScrape = 0;
  const scrapes = new Map<number, { resolve: (text: string) => void; reject: (error: Error) => void }>();
  // Tests make one thread fail: FERRYTEST_THREAD_FAIL=<index>:startup or <index>:serving.
  const fail = process.env.FERRYTEST_THREAD_FAIL === undefined ? undefined : /^(\d+):(startup|serving)$/.exec(process.env.FERRYTEST_THREAD_FAIL);
  const failHere = fail && Number(fail[1]) === data.index ? fail[2] : undefined;
  try {
    if (failHere === "startup") throw new Error(`serving thread ${data.index}: failing at start-up as FERRYTEST_THREAD_FAIL asks`);
    // Tests hold a thread in start-up: FERRYTEST_THREAD_START_DELAY_MS=<ms>.
    const delay = Number(process.env.FERRYTEST_THREAD_START_DELAY_MS ?? 0);
    if (delay > 0) {
      logger.warn({ ms: delay }, `serving thread ${data.index}: holding start-up as FERRYTEST_THREAD_START_DELAY_MS asks`);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
    registry = await startRegistry(config, {
      logger,
      // Opened last, when this thread accepts at once (src/threads/listen.ts).
      listenSocket: () => openThreadSocket(data.address, data.port, false),
      scheduledJobs: false,
      startupChecks: false,
      // The main thread gathers every thread's metrics (this one's included) and answers.
      metricsText: () =>
        new Promise<string>((resolve, reject) => {
          const id = ++nextScrape;
          scrapes.set(id, { resolve, reject });
          post({ type: "scrape", id });
        }),
    });
  } catch (error) {
    await new Promise<void>((resolve) => logger.flush(() => resolve()));
    post({ type: "startup-failed", message: (error as Error).message });
    return;
  }
  port.on("message", (message: unknown) => {
    if (!isMessage<ToThread>(message)) return;
    if (message.type === "collect") {
      void registry.metrics.registry.getMetricsAsJSON().then((metrics) => post({ type: "metrics", id: message.id, metrics }));
    } else if (message.type === "scraped") {
      const waiting = scrapes.get(message.id);
      scrapes.delete(message.id);
      if (message.error !== undefined) waiting?.reject(new Error(message.error));
      else waiting?.resolve(message.text);
    } else if (message.type === "drain") {
      // The main thread ends this thread once its last log lines are written.
      void registry
        .drain(message.graceMs)
        .then(() => new Promise<void>((resolve) => logger.flush(() => resolve())))
        .then(() => post({ type: "drained" }));
    }
  });
  post({ type: "ready" });
  if (failHere === "serving") {
    setTimeout(() => {
      throw new Error(`serving thread ${data.index}: failing while serving as FERRYTEST_THREAD_FAIL asks`);
    }, 300);
  }
}

void main();
