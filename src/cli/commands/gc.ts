/** `ferry gc`: one garbage-collection pass over the data directory (safe while the registry runs). */
import type { Command } from "commander";
import type { ServerFlags } from "../server-config.js";
import { parseDuration } from "../../config/units.js";

interface GcFlags extends ServerFlags {
  grace?: string;
  untagged?: boolean;
}

export function registerGc(program: Command): void {
  program
    .command("gc")
    .description("delete blobs no manifest references (online; a grace period protects fresh uploads)")
    .option("-c, --config <file>", "YAML config file")
    .option("-d, --data <dir>", "data directory")
    .option("--grace <duration>", "keep anything newer than this (default from config, 1h)")
    .option("--untagged", "also delete manifests that no tag, index or subject keeps")
    .action(async (flags: GcFlags) => {
      // Loaded here so other commands do not pay for the server's modules at start-up.
      const { configFromFlags } = await import("../server-config.js");
      const { startRegistry } = await import("../../server.js");
      const config = configFromFlags({ ...flags, listen: "127.0.0.1:0" });
      const grace = flags.grace === undefined ? undefined : parseDuration(flags.grace);
      if (flags.grace !== undefined && grace === undefined) throw new Error(`--grace "${flags.grace}" is not a duration`);
      const registry = await startRegistry({ ...config, log: { ...config.log, level: "warn" } });
      try {
        const report = await registry.gc({ gracePeriodMs: grace, untagged: flags.untagged });
        if (report.skipped) {
          process.stdout.write("another garbage collection is running on this registry; nothing done\n");
          return;
        }
        process.stdout.write(
          `deleted ${report.blobsDeleted} blobs, ${report.linksDeleted} repository links, ${report.manifestsDeleted} manifests` +
            (report.untrackedDeleted > 0 ? `, ${report.untrackedDeleted} blobs left behind by a crash` : "") +
            "\n",
        );
      } finally {
        await registry.close();
      }
    });
}
