/**
 * The serving threads of `ferry serve` (config `threads`: 1 by default,
 * `auto` one per core): the main thread starts the registry and listens; each extra thread
 * runs the same full registry on a listening socket of its own on the same
 * port (SO_REUSEPORT, src/threads/listen.ts), and the kernel spreads new
 * connections over the threads.
 *
 * Why threads and not only `--workers` processes: a request costs Ferry
 * ~60 µs of CPU, so one event loop is one core's worth of requests; threads
 * share the process's code pages, allocator and native libraries and add
 * only their own heap (docs/benchmarks-history.md, "Speed round 5").
 *
 * A thread that dies while serving stops the whole process (exit 1, with the
 * thread's error in the log) rather than being replaced: unlike a dead
 * process, a dead thread's SQLite connection, open files and leases live on
 * in the process, so a replacement could find the database locked or files
 * half-written. The service manager (systemd, a container runtime) restarts
 * the process, which recovers from a crash by design.
 */
import { Worker } from "node:worker_threads";
import { availableParallelism } from "node:os";
import type { Logger } from "pino";
import type { Config } from "../config/schema.js";
import type { ServerFlags } from "../cli/server-config.js";
import { mergeThreadMetrics, type MetricsJson } from "./metrics.js";
import { isMessage, type ThreadData, type ToMain, type ToThread } from "./messages.js";
import { streamingHeap } from "../memory/streaming-heap.js";

/**
 * `threads: auto` uses one thread per core up to this many: each thread adds
 * its heap (~25-40 MiB under load) while SQLite serializes writes, so past
 * this a machine is better served by replicas or an explicit count.
 */
export const MAX_AUTO_THREADS = 8;
/**
 * Young generation of each extra thread (V8: two semi-spaces plus as much
 * again for new large objects, so 12 MB is a 4 MiB semi-space). V8 grows an
 * unlimited one to 16 MiB semi-spaces under request load, 32 MiB of new space
 * per thread. Measured (docs/benchmarks-history.md, "Speed round 5"): with 2 threads
 * the mix's peak RSS 204 -> 167 MiB, CPU per cached manifest GET unchanged
 * within the rounds' spread; 6 MB cost ~10% CPU per GET.
 * FERRYTEST_THREAD_YOUNG_MB overrides it for such measurements (0 = V8's own).
 */
const THREAD_YOUNG_GENERATION_MB = 12;

function youngGenerationMb(): number | undefined {
  const chosen = Number(process.env.FERRYTEST_THREAD_YOUNG_MB ?? THREAD_YOUNG_GENERATION_MB);
  return Number.isFinite(chosen) && chosen > 0 ? chosen : undefined;
}

/** How long a scrape waits for a thread's metrics before answering without them. */
const COLLECT_TIMEOUT_MS = 5_000;

/** The number of serving threads `config` asks for on this machine. */
export function threadCount(config: Pick<Config, "threads" | "workers">, cores = availableParallelism()): number {
  if (config.threads !== "auto") return config.threads;
  // `--workers N` already puts a process on each core.
  return config.workers > 1 ? 1 : Math.max(1, Math.min(cores, MAX_AUTO_THREADS));
}

export interface ServingThreads {
  /** The extra threads running (the main thread not counted). */
  readonly size: number;
  /** /metrics for the whole process: the main thread's own and every thread's, merged. */
  metricsText(): Promise<string>;
  /** Every thread stops accepting and finishes its requests in flight (up to graceMs), then ends. */
  drain(graceMs: number): Promise<void>;
}

export interface ThreadOptions {
  flags: ServerFlags;
  /** Where the main thread listens: numeric address ("" = every interface) and actual port. */
  address: string;
  port: number;
  logger: Logger;
  ownMetrics(): Promise<MetricsJson>;
  /** A thread died while serving; called once. */
  onCrash(message: string): void;
}

interface Running {
  index: number;
  worker: Worker;
  exited: Promise<void>;
  drained: boolean;
}

/** Starts `extra` threads one after another (each once the previous one serves); rejects with the first start-up failure. */
export async function startServingThreads(extra: number, options: ThreadOptions): Promise<ServingThreads> {
  const running: Running[] = [];
  const pending = new Map<string, (metrics: MetricsJson | undefined) => void>();
  let nextCollect = 0;
  let draining = false;
  let crashed = false;

  const collect = async (): Promise<string> => {
    const id = ++nextCollect;
    const asks = running.map(
      (thread) =>
        new Promise<MetricsJson | undefined>((resolve) => {
          const key = `${thread.index}:${id}`;
          const timer = setTimeout(() => {
            pending.delete(key);
            resolve(undefined);
          }, COLLECT_TIMEOUT_MS);
          pending.set(key, (metrics) => {
            clearTimeout(timer);
            resolve(metrics);
          });
          thread.worker.postMessage({ type: "collect", id } satisfies ToThread);
        }),
    );
    const [own, ...others] = await Promise.all([options.ownMetrics(), ...asks]);
    return mergeThreadMetrics([own!, ...others.filter((m): m is MetricsJson => m !== undefined)]);
  };

  const start = (index: number) =>
    new Promise<void>((resolveStart, rejectStart) => {
      const data: ThreadData = { flags: options.flags, address: options.address, port: options.port, index, streamingState: streamingHeap.state };
      const worker = new Worker(new URL("./serving-thread.js", import.meta.url), {
        workerData: data,
        resourceLimits: { maxYoungGenerationSizeMb: youngGenerationMb() },
      });
      let ready = false;
      let lastError: Error | undefined;
      const thread: Running = {
        index,
        worker,
        drained: false,
        exited: new Promise((resolveExit) => worker.once("exit", () => resolveExit())),
      };
      worker.on("message", (message: unknown) => {
        if (!isMessage<ToMain>(message)) return;
        switch (message.type) {
          case "ready":
            ready = true;
            running.push(thread);
            resolveStart();
            break;
          case "startup-failed":
            rejectStart(new Error(message.message));
            void worker.terminate();
            break;
          case "metrics":
            pending.get(`${index}:${message.id}`)?.(message.metrics);
            pending.delete(`${index}:${message.id}`);
            break;
          case "scrape":
            collect().then(
              (text) => worker.postMessage({ type: "scraped", id: message.id, text } satisfies ToThread),
              (error: Error) => worker.postMessage({ type: "scraped", id: message.id, text: "", error: error.message } satisfies ToThread),
            );
            break;
          case "drained":
            thread.drained = true;
            void worker.terminate();
            break;
        }
      });
      worker.on("error", (error) => {
        lastError = error;
      });
      worker.once("exit", (code) => {
        const at = running.indexOf(thread);
        if (at >= 0) running.splice(at, 1);
        for (const key of [...pending.keys()]) if (key.startsWith(`${index}:`)) pending.get(key)?.(undefined);
        const why = lastError ? `: ${lastError.stack ?? lastError.message}` : ` (exit code ${code})`;
        if (!ready) {
          rejectStart(new Error(`serving thread ${index} stopped during start-up${lastError ? `: ${lastError.message}` : ` (exit code ${code})`}`));
          return;
        }
        if (thread.drained || draining || crashed) return;
        crashed = true;
        options.onCrash(`serving thread ${index} died${why}`);
      });
    });

  const threads: ServingThreads = {
    get size() {
      return running.length;
    },
    metricsText: collect,
    async drain(graceMs: number) {
      draining = true;
      const stopping = [...running];
      for (const thread of stopping) thread.worker.postMessage({ type: "drain", graceMs } satisfies ToThread);
      // A thread that does not finish within the grace (plus time to close its stores) is ended.
      const deadline = setTimeout(() => {
        for (const thread of stopping) void thread.worker.terminate();
      }, graceMs + 5_000);
      await Promise.all(stopping.map((thread) => thread.exited));
      clearTimeout(deadline);
    },
  };

  for (let index = 1; index <= extra; index++) {
    try {
      await start(index);
    } catch (error) {
      await threads.drain(2_000);
      throw error;
    }
  }
  options.logger.debug({ threads: extra + 1 }, "serving threads started");
  return threads;
}
