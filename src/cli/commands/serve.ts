/** `ferry serve`: runs the registry (one process, or one per --workers over the same data). */
import cluster from "node:cluster";
import type { Command } from "commander";
import type { ServerFlags } from "../server-config.js";

export function registerServe(program: Command): void {
  program
    .command("serve")
    .description("run the registry (defaults: 127.0.0.1:5000, data in ./data, no config file needed)")
    .option("-c, --config <file>", "YAML config file (every key can also be set as FERRY_<KEY>)")
    .option("-l, --listen <host:port>", "address to listen on")
    .option("-d, --data <dir>", "data directory (blobs and embedded metadata)")
    .option("-w, --workers <n>", "processes serving the same data (one per core is sensible)")
    .action(async (flags: ServerFlags) => serve(flags));
}

async function serve(flags: ServerFlags): Promise<void> {
  // Loaded here, not at the top: every `ferry` command (push, pull...) would pay for the server's modules at start-up.
  const { configFromFlags } = await import("../server-config.js");
  const { createLogger, startRegistry, splitListen } = await import("../../server.js");
  const config = configFromFlags(flags);
  const logger = createLogger(config);
  if (config.workers > 1 && cluster.isPrimary) {
    const { supervise } = await import("../supervisor.js");
    supervise(config.workers, logger);
    return;
  }
  const { reportToPrimary } = await import("../supervisor.js");
  let registry: Awaited<ReturnType<typeof startRegistry>>;
  try {
    registry = await startRegistry(config, { logger });
  } catch (error) {
    if (!cluster.isWorker) throw error;
    // The primary prints it once and stops: restarting a worker that cannot start only loops.
    await reportToPrimary({ type: "ferry:startup-failed", message: (error as Error).message });
    process.exit(1);
  }
  await reportToPrimary({ type: "ferry:ready" });
  const { host } = splitListen(config.listen);
  if (registry.deps.access.open && !isLoopback(host)) {
    logger.warn(
      { listen: config.listen },
      "NO ACCESS CONTROL: anyone who can reach this address can read, push and delete everything. Configure `auth` before exposing the registry.",
    );
    // The log is buffered; a start-up warning must not wait for the buffer to fill.
    logger.flush();
  }
  if (cluster.isPrimary || cluster.worker?.id === 1) {
    process.stdout.write(`Ferry registry listening on ${registry.url} (data: ${config.data})\n`);
  }
  const stop = async () => {
    await registry.close();
    logger.flush();
    process.exit(0);
  };
  process.once("SIGINT", () => void stop());
  process.once("SIGTERM", () => void stop());
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}
