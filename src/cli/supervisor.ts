/**
 * The primary process of `ferry serve --workers N`: starts the workers,
 * restarts one that dies while serving, and gives up (exit 1, with the
 * worker's own message, as a single process would) when a worker cannot
 * start at all or they keep dying. Restarting a worker that fails at
 * start-up (port in use, bad data directory) would only loop forever.
 *
 * Workers start one after another, each once the previous one is ready:
 * start-up creates and migrates the database files, and SQLite can answer
 * "database is locked" at once (without waiting) to processes doing that
 * concurrently, which would stop the whole server.
 */
import cluster, { type Worker } from "node:cluster";
import type { Logger } from "pino";

/** What a worker tells the primary about its start-up. */
export type WorkerMessage = { type: "ferry:ready" } | { type: "ferry:startup-failed"; message: string };

/** More deaths than this within DEATH_WINDOW_MS stop the supervisor. */
const MAX_DEATHS = 5;
const DEATH_WINDOW_MS = 60_000;
/** Pause before replacing a dead worker, so a crash loop cannot spin the CPU. */
const RESTART_DELAY_MS = 500;
/** How long workers get to close after SIGTERM before the primary leaves anyway. */
const STOP_GRACE_MS = 10_000;

function isWorkerMessage(value: unknown): value is WorkerMessage {
  return typeof value === "object" && value !== null && typeof (value as { type?: unknown }).type === "string";
}

export function supervise(count: number, logger: Logger): void {
  const ready = new Set<number>();
  const deaths: number[] = [];
  let stopping = false;

  const liveWorkers = (): Worker[] => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);

  const stopAll = (exitCode: number) => {
    stopping = true;
    const started = Date.now();
    if (exitCode === 0) logger.info({ workers: liveWorkers().length }, "ferry stopping: workers finish requests in flight");
    for (const worker of liveWorkers()) worker.process.kill("SIGTERM");
    const leave = () => {
      if (exitCode === 0) logger.info({ ms: Date.now() - started, workersLeft: liveWorkers().length }, "ferry stopped");
      logger.flush();
      process.exit(exitCode);
    };
    if (liveWorkers().length === 0) return leave();
    const timer = setTimeout(leave, STOP_GRACE_MS);
    timer.unref();
    cluster.on("exit", () => {
      if (liveWorkers().length === 0) leave();
    });
  };

  const fail = (message: string) => {
    if (stopping) return;
    process.stderr.write(`ferry: ${message}\n`);
    stopAll(1);
  };

  let started = 0;
  const fork = () => {
    const worker = cluster.fork();
    worker.on("message", (message: unknown) => {
      if (!isWorkerMessage(message)) return;
      if (message.type === "ferry:ready") {
        ready.add(worker.id);
        // The next of the initial workers starts once this one is up.
        if (started < count && !stopping) {
          started++;
          fork();
        }
      } else if (message.type === "ferry:startup-failed") fail(message.message);
    });
  };

  cluster.on("exit", (worker, code, signal) => {
    if (stopping) return;
    const workerPid = worker.process.pid;
    if (!ready.has(worker.id)) {
      // It never served: the next one would fail the same way.
      fail(`a worker exited during start-up (code ${code}${signal ? `, signal ${signal}` : ""}); stopping`);
      return;
    }
    ready.delete(worker.id);
    if (code === 0 || signal === "SIGTERM" || signal === "SIGINT") {
      if (liveWorkers().length === 0) stopAll(0);
      return;
    }
    const now = Date.now();
    deaths.push(now);
    while (deaths.length > 0 && deaths[0]! < now - DEATH_WINDOW_MS) deaths.shift();
    if (deaths.length > MAX_DEATHS) {
      logger.error({ workerPid, code, signal, deaths: deaths.length }, "workers keep dying; stopping");
      fail(`workers died ${deaths.length} times within ${DEATH_WINDOW_MS / 1000} s; stopping (see the log)`);
      return;
    }
    logger.error({ workerPid, code, signal }, "worker died; starting another");
    setTimeout(() => {
      if (!stopping) fork();
    }, RESTART_DELAY_MS);
  });

  logger.info({ workers: count }, "starting workers");
  started = 1;
  fork();
  const stop = () => stopAll(0);
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

/** Tells the primary (if any) how start-up went; resolves once the message is sent. */
export function reportToPrimary(message: WorkerMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!cluster.isWorker || !process.send) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}
