/**
 * `ferry migrate --from sqlite:PATH --to postgres://…`: copies an embedded
 * installation's metadata into PostgreSQL (docs/metadata.md). The target's
 * schema is created or migrated first; a target that already holds metadata
 * is refused unless --force. The copy is verified before it reports success.
 */
import type { Command } from "commander";

interface MigrateFlags {
  from: string;
  to: string;
  force?: boolean;
  poolSize?: string;
}

export function registerMigrate(program: Command): void {
  program
    .command("migrate")
    .description("copy metadata from an embedded SQLite database into PostgreSQL (then verify the copy)")
    .requiredOption("--from <source>", "sqlite:PATH of the metadata database (e.g. sqlite:/var/lib/ferry/metadata.db)")
    .requiredOption("--to <url>", "postgres://user@host:5432/database (its schema is created if missing)")
    .option("--force", "replace metadata the target already holds (default: refuse a non-empty target)")
    .action(async (flags: MigrateFlags) => {
      const { existsSync } = await import("node:fs");
      const { resolve } = await import("node:path");
      const { SqliteMetaStore } = await import("../../metadata/sqlite.js");
      const { PostgresMetaStore, redactUrl } = await import("../../metadata/postgres.js");
      const { copyMetadata } = await import("../../metadata/copy.js");
      if (!flags.from.startsWith("sqlite:")) throw new Error(`--from must be sqlite:PATH, got "${flags.from}"`);
      const path = resolve(flags.from.slice("sqlite:".length));
      if (!existsSync(path)) throw new Error(`--from: no SQLite database at ${path}`);
      if (!/^postgres(ql)?:\/\//.test(flags.to)) throw new Error("--to must be a postgres:// URL");
      const source = await SqliteMetaStore.open(path);
      try {
        const target = await PostgresMetaStore.open({ url: flags.to, poolSize: 2, connectTimeoutMs: 10_000, statementTimeoutMs: 600_000, key: "--to", listen: false });
        try {
          process.stderr.write(`copying ${path} into ${redactUrl(flags.to)}\n`);
          const report = await copyMetadata(source.database().db, target.database().db, target.database().dialect, {
            replace: flags.force === true,
            onProgress: (table, copied) => {
              if (table === "manifests" && copied % 10_000 === 0) process.stderr.write(`  ${copied} manifests\n`);
            },
          });
          const perTenThousand = report.manifests > 0 ? (report.elapsedMs / report.manifests) * 10_000 : 0;
          for (const [table, count] of Object.entries(report.rows)) process.stdout.write(`${table}: ${count}\n`);
          process.stdout.write(
            `verified: row counts equal, manifest bytes equal (sha256 ${report.manifestHash.slice(0, 16)}…)\n` +
              `copied ${report.manifests} manifests in ${(report.elapsedMs / 1000).toFixed(1)} s` +
              (report.manifests > 0 ? ` (${(perTenThousand / 1000).toFixed(1)} s per 10,000 manifests)` : "") +
              "\n",
          );
          if (report.mismatched.length > 0) {
            process.stderr.write(`warning: ${report.mismatched.length} manifests in the source do not hash to their digest (copied as they were): ${report.mismatched.slice(0, 5).join(", ")}\n`);
          }
        } finally {
          await target.close();
        }
      } finally {
        await source.close();
      }
    });
}
