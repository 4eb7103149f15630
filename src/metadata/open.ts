/**
 * Opens the configured metadata store (`metadata.driver`). The PostgreSQL
 * driver (and `pg`) is loaded only when configured.
 */
import { join, resolve } from "node:path";
import type { MetaStore } from "./meta-store.js";
import { SqliteMetaStore } from "./sqlite.js";

export interface MetadataConfig {
  driver: "sqlite" | "postgres";
  sqlite: { path?: string };
  postgres: { url?: string; poolSize: number; connectTimeout: number; statementTimeout: number };
}

/** The SQLite file the embedded driver uses (also where side files such as the notification queue live). */
export function sqlitePath(config: MetadataConfig, dataDir: string): string {
  return config.sqlite.path ? resolve(config.sqlite.path) : join(dataDir, "metadata.db");
}

export async function openMetaStore(config: MetadataConfig, dataDir: string): Promise<MetaStore> {
  if (config.driver === "postgres") {
    const { PostgresMetaStore } = await import("./postgres.js");
    return PostgresMetaStore.open({
      url: config.postgres.url!,
      poolSize: config.postgres.poolSize,
      connectTimeoutMs: config.postgres.connectTimeout,
      statementTimeoutMs: config.postgres.statementTimeout,
    });
  }
  return SqliteMetaStore.open(sqlitePath(config, dataDir));
}
