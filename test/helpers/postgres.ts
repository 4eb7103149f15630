/**
 * A real PostgreSQL for tests: the one named by FERRY_TEST_PG_URL (which
 * .ci/run starts once for the whole suite), else one this test process starts
 * with scripts/pg-service.sh (data in a temp dir, stopped when the process
 * exits). Each test gets a schema of its own (`freshDatabaseUrl`), so test
 * files run in parallel on one server.
 *
 * Without the PostgreSQL packages the tests are skipped with the apt-get
 * line; with REQUIRE_E2E_TOOLS=1 (CI) that is a failure instead.
 */
import { execFile, spawnSync } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { randomBytes } from "node:crypto";
import pg from "pg";

const run = promisify(execFile);
const SCRIPT = resolve(process.cwd(), "scripts/pg-service.sh");
export const PG_APT_LINE = "apt-get install -y --no-install-recommends postgresql";

/** A skip reason when no PostgreSQL can be had, false otherwise (throws under REQUIRE_E2E_TOOLS=1). */
export function skipUnlessPostgres(): string | false {
  if (process.env.FERRY_TEST_PG_URL) return false;
  if (spawnSync(SCRIPT, ["check"], { stdio: "ignore" }).status === 0) return false;
  if (process.env.REQUIRE_E2E_TOOLS === "1") throw new Error(`PostgreSQL packages missing (.ci/run installs them: ${PG_APT_LINE})`);
  return `needs PostgreSQL (install: ${PG_APT_LINE})`;
}

async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolvePort(port));
    });
  });
}

let server: Promise<string> | undefined;

/** The server's base URL (shared, or started once for this process). */
export function postgresServer(): Promise<string> {
  const shared = process.env.FERRY_TEST_PG_URL;
  if (shared) return Promise.resolve(shared);
  server ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-pg-"));
    const port = await freePort();
    const env = { ...process.env, PG_DIR: dir, PG_PORT: String(port) };
    const { stdout } = await run(SCRIPT, ["start"], { env, timeout: 120_000 });
    process.on("exit", () => {
      spawnSync(SCRIPT, ["stop", "--purge"], { env, stdio: "ignore" });
    });
    return stdout.trim();
  })();
  return server;
}

/** `base` with a search_path option: every table the store creates lands in `schema`. */
export function withSchema(base: string, schema: string): string {
  const url = new URL(base);
  url.searchParams.set("options", `-c search_path=${schema}`);
  return url.toString();
}

/** A URL whose schema is new and empty; `drop` removes it with everything in it. */
export async function freshDatabaseUrl(): Promise<{ url: string; schema: string; drop: () => Promise<void> }> {
  const base = await postgresServer();
  const schema = `t_${randomBytes(6).toString("hex")}`;
  await adminQuery(base, `create schema ${schema}`);
  return { url: withSchema(base, schema), schema, drop: async () => void (await adminQuery(base, `drop schema if exists ${schema} cascade`)) };
}

export async function adminQuery(url: string, text: string, values: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await client.query(text, values);
  } finally {
    await client.end();
  }
}
