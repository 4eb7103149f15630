/**
 * `ferry serve`: runs the registry: one process with one serving thread or
 * more (config `threads`, src/threads/), or one process per --workers over
 * the same data.
 */
import cluster from "node:cluster";
import type { Command } from "commander";
import type { Logger } from "pino";
import type { ServerFlags } from "../server-config.js";
import type { Config } from "../../config/schema.js";
import { VERSION } from "../version.js";

/**
 * How long requests in flight get to finish after SIGTERM; under the
 * `--workers` supervisor's 10 s, so a worker is done before its primary leaves.
 */
const DRAIN_GRACE_MS = 8_000;

export function registerServe(program: Command): void {
  program
    .command("serve")
    .description("run the registry (defaults: 127.0.0.1:5000, data in ./data, no config file needed)")
    .option("-c, --config <file>", "YAML config file (every key can also be set as FERRY_<KEY>)")
    .option("-l, --listen <host:port>", "address to listen on")
    .option("-d, --data <dir>", "data directory (blobs and embedded metadata)")
    .option("-t, --threads <n|auto>", "threads serving in this process (default 1; auto: one per core, at most 8)")
    .option("-w, --workers <n>", "processes serving the same data (each with one thread unless --threads says otherwise)")
    .action(async (flags: ServerFlags) => serve(flags));
}

async function serve(flags: ServerFlags): Promise<void> {
  // Loaded here, not at the top: every `ferry` command (push, pull...) would pay for the server's modules at start-up.
  const { configFromFlags } = await import("../server-config.js");
  const { createLogger, startRegistry, splitListen } = await import("../../server.js");
  const config = configFromFlags(flags);
  if (config.workers > 1 && config.threads !== "auto" && config.threads > 1) {
    process.stderr.write(`ferry: choose threads or workers: --workers ${config.workers} with --threads ${config.threads} would start ${config.workers * config.threads} event loops\n`);
    process.exit(2);
  }
  const logger = createLogger(config);
  // Before the registry allocates: caps the heap's slack over live data (src/memory/heap-growth.ts).
  const { limitHeapGrowth } = await import("../../memory/heap-growth.js");
  limitHeapGrowth();
  // ... and gives large bodies streamed through JavaScript more room while they stream (src/memory/streaming-heap.ts).
  const { enableStreamingRoom } = await import("../../memory/streaming-heap.js");
  enableStreamingRoom();
  if (config.workers > 1 && cluster.isPrimary) {
    const { supervise } = await import("../supervisor.js");
    supervise(config.workers, logger);
    // The supervisor stops its workers on SIGTERM.
    stopWithParent(logger, () => process.kill(process.pid, "SIGTERM"));
    return;
  }
  const { reportToPrimary } = await import("../supervisor.js");
  let registry: Awaited<ReturnType<typeof startRegistry>>;
  let threads: import("../../threads/serving-threads.js").ServingThreads | undefined;
  const { threadCount } = await import("../../threads/serving-threads.js");
  const wanted = threadCount(config);
  // With several threads the main thread listens like the others, on a socket of its own (src/threads/listen.ts),
  // opened when its server is ready to accept; the extra threads bind the address it resolved.
  const perThread = wanted > 1 && (await threadSocketsPossible(logger));
  const main: { socket?: import("../../threads/listen.js").ThreadSocket } = {};
  const { openThreadSocket } = await import("../../threads/listen.js");
  const where = splitListen(config.listen);
  try {
    registry = await startRegistry(config, {
      logger,
      listenSocket: perThread ? () => openThreadSocket(where.host, where.port, true, (opened) => (main.socket = opened)) : undefined,
      // With several threads a scrape answers for all of them, whichever thread it reached.
      metricsText: () => (threads ? threads.metricsText() : registry.metrics.registry.metrics()),
    });
  } catch (error) {
    if (!cluster.isWorker) throw error;
    // The primary prints it once and stops: restarting a worker that cannot start only loops.
    await reportToPrimary({ type: "ferry:startup-failed", message: (error as Error).message });
    process.exit(1);
  }
  let stopping = false;
  let exitCode = 0;
  // A person pressing Ctrl-C (or reading the journal after a restart) sees that the stop was clean and
  // how long draining took; workers stay quiet, their primary says it once.
  const say = cluster.isPrimary ? (fields: object, msg: string) => logger.info(fields, msg) : () => {};
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    const started = Date.now();
    say({ signal }, "ferry stopping: listener closed, finishing requests in flight");
    // A thread still starting is ended with the process.
    await Promise.all([registry.drain(DRAIN_GRACE_MS), threads?.drain(DRAIN_GRACE_MS)]);
    say({ ms: Date.now() - started }, "ferry stopped");
    logger.flush();
    process.exit(exitCode);
  };
  // Installed before the extra threads start: the main thread already answers requests.
  process.once("SIGINT", () => void stop("SIGINT"));
  process.once("SIGTERM", () => void stop("SIGTERM"));
  if (main.socket) {
    const started = await startThreads(wanted - 1, flags, { address: main.socket.address, port: registry.port }, registry, logger, (message) => {
      logger.error(message);
      process.stderr.write(`ferry: ${message}; stopping\n`);
      exitCode = 1;
      void stop("a serving thread died");
    });
    if ("error" in started) {
      process.stderr.write(`ferry: ${started.error}\n`);
      await registry.close();
      logger.flush();
      process.exit(1);
    }
    threads = started.threads;
  }
  await reportToPrimary({ type: "ferry:ready" });
  if (registry.deps.access.open && !isLoopback(where.host)) {
    logger.warn(
      { listen: config.listen },
      "NO ACCESS CONTROL: anyone who can reach this address can read, push and delete everything. Configure `auth` before exposing the registry.",
    );
    // The log is buffered; a start-up warning must not wait for the buffer to fill.
    logger.flush();
  }
  if (cluster.isPrimary || cluster.worker?.id === 1) announce(config, registry.url, logger, 1 + (threads?.size ?? 0));
  if (cluster.isPrimary) stopWithParent(logger, () => void stop("parent gone"));
}

/**
 * The start-up banner: a JSON log line like every other (log collectors parse
 * it), plus one human sentence when a person is watching the terminal.
 */
function announce(config: Config, url: string, logger: Logger, threads: number): void {
  const { host } = splitListenHost(config.listen);
  logger.info(
    {
      url,
      listen: config.listen,
      interfaces: host === "" ? "all" : host,
      data: config.data,
      storage: config.storage.driver,
      metadata: config.metadata.driver,
      workers: config.workers,
      threads,
      auth: config.auth ? "on" : "off",
      version: VERSION,
    },
    `ferry listening on ${url}`,
  );
  logger.flush();
  if (process.stderr.isTTY) {
    const where = host === "" ? `every interface, port ${config.listen.slice(1)}` : url;
    process.stderr.write(`Ferry ${VERSION} listening on ${where} (data: ${config.data}, blobs: ${config.storage.driver}, metadata: ${config.metadata.driver}). Stop with Ctrl-C.\n`);
  }
}

/**
 * Whether the threads can each have a socket of their own; if not (no native
 * addon), Ferry serves on one thread with a warning saying why rather than
 * not at all.
 */
async function threadSocketsPossible(logger: Logger): Promise<boolean> {
  const { reusePortUnavailable } = await import("../../native/addon.js");
  const reason = reusePortUnavailable();
  if (reason !== undefined) logger.warn({ reason }, "serving on one thread");
  return reason === undefined;
}

/** Starts the extra serving threads, or says why they could not start. */
async function startThreads(
  extra: number,
  flags: ServerFlags,
  where: { address: string; port: number },
  registry: { metrics: { registry: { getMetricsAsJSON(): Promise<import("../../threads/metrics.js").MetricsJson> } } },
  logger: Logger,
  onCrash: (message: string) => void,
): Promise<{ threads: import("../../threads/serving-threads.js").ServingThreads } | { error: string }> {
  const { startServingThreads } = await import("../../threads/serving-threads.js");
  try {
    const threads = await startServingThreads(extra, { flags, ...where, logger, ownMetrics: () => registry.metrics.registry.getMetricsAsJSON(), onCrash });
    return { threads };
  } catch (error) {
    return { error: (error as Error).message };
  }
}

function splitListenHost(listen: string): { host: string } {
  return { host: listen.slice(0, listen.lastIndexOf(":")).replace(/^\[|\]$/g, "") };
}

/**
 * Under npm (`npx ferry serve`, `npm start`) the server runs below a shell
 * that npm signals; when that shell dies the signal never reaches us and the
 * server would outlive the command the user stopped, holding the port. So a
 * process started by npm stops when its parent goes away. Outside npm
 * (systemd, nohup, a container) being re-parented is normal and nothing happens.
 */
function stopWithParent(logger: Logger, stop: () => void): void {
  if (!process.env.npm_command && !process.env.npm_lifecycle_event) return;
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    logger.info({ parent }, "the process that started ferry (npm) is gone; stopping");
    stop();
  }, 500);
  timer.unref();
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}
