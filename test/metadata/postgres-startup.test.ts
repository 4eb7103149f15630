/**
 * `ferry serve` on PostgreSQL: start-up errors an operator can act on (the key,
 * what PostgreSQL answered, never the password), versioned migrations that two
 * replicas starting at once on an empty database run exactly once, a database
 * migrated by a newer Ferry refused, and a push and pull served end to end.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, startServeProcess } from "../helpers/serve-process.js";
import { adminQuery, freshDatabaseUrl, postgresServer, skipUnlessPostgres, withSchema } from "../helpers/postgres.js";
import { PostgresMetaStore } from "../../src/metadata/postgres.js";
import { SCHEMA_VERSION } from "../../src/metadata/sql/migrations.js";

const skip = skipUnlessPostgres();
const PASSWORD = "pw-Do-Not-Print-7f3a";

/** Runs `ferry serve` until it exits (or 20 s); its exit code and stderr. */
async function serveUntilExit(env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  const data = await mkdtemp(join(tmpdir(), "ferry-pg-start-"));
  try {
    const child = spawn(process.execPath, ["dist/src/cli/main.js", "serve", "--listen", `127.0.0.1:${await freePort()}`, "--data", data], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { PATH: process.env.PATH ?? "", FERRY_LOG__LEVEL: "warn", FERRY_METADATA__DRIVER: "postgres", ...env },
    });
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
    clearTimeout(timer);
    return { code, stderr };
  } finally {
    await rm(data, { recursive: true, force: true });
  }
}

describe("ferry serve with metadata.driver postgres", { skip }, () => {
  test("an unreachable server, an unknown role and a missing database each stop start-up with the key and PostgreSQL's answer, never the password", async () => {
    const base = new URL(await postgresServer());
    const closedPort = await freePort();
    const cases = [
      { url: `postgres://ferry:${PASSWORD}@127.0.0.1:${closedPort}/ferry`, expect: /unreachable/i },
      { url: `postgres://nobody:${PASSWORD}@${base.host}/ferry`, expect: /refused the login.*nobody/i },
      { url: `postgres://ferry:${PASSWORD}@${base.host}/no_such_database`, expect: /database is missing.*no_such_database/i },
    ];
    for (const c of cases) {
      const { code, stderr } = await serveUntilExit({ FERRY_METADATA__POSTGRES__URL: c.url, FERRY_METADATA__POSTGRES__CONNECT_TIMEOUT: "3s" });
      assert.notEqual(code, 0, stderr);
      assert.match(stderr, /metadata\.postgres\.url/, stderr);
      assert.match(stderr, c.expect, stderr);
      assert.ok(!stderr.includes(PASSWORD), `the password leaked: ${stderr}`);
    }
  });

  test("driver postgres without a URL is a configuration error naming the key", async () => {
    const { code, stderr } = await serveUntilExit({});
    assert.notEqual(code, 0);
    assert.match(stderr, /metadata\.postgres\.url/);
  });

  test("two replicas starting at once on an empty database migrate it once; a schema newer than the code stops start-up", async (t) => {
    const { url, schema, drop } = await freshDatabaseUrl();
    t.after(drop);
    const stores = await Promise.all([1, 2, 3].map(() => PostgresMetaStore.open({ url, poolSize: 2, connectTimeoutMs: 5_000, statementTimeoutMs: 30_000 })));
    for (const store of stores) await store.close();
    const rows = await adminQuery(withSchema(await postgresServer(), schema), "select id, version from ferry_schema");
    assert.deepEqual(rows.rows, [{ id: 1, version: SCHEMA_VERSION }]);

    // Two real processes at once on another empty schema: both start and serve.
    const second = await freshDatabaseUrl();
    t.after(second.drop);
    const dirs = await Promise.all([1, 2].map(() => mkdtemp(join(tmpdir(), "ferry-pg-rep-"))));
    t.after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))).then(() => undefined));
    const env = { FERRY_METADATA__DRIVER: "postgres", FERRY_METADATA__POSTGRES__URL: second.url };
    const replicas = await Promise.all(dirs.map((data) => startServeProcess({ data, env })));
    t.after(() => Promise.all(replicas.map((r) => r.stop())).then(() => undefined));
    for (const replica of replicas) assert.equal((await fetch(`${replica.url}/v2/_catalog`)).status, 200);

    await adminQuery(withSchema(await postgresServer(), schema), "update ferry_schema set version = $1", [SCHEMA_VERSION + 1]);
    await assert.rejects(
      PostgresMetaStore.open({ url, poolSize: 2, connectTimeoutMs: 5_000, statementTimeoutMs: 30_000 }),
      new RegExp(`schema version ${SCHEMA_VERSION + 1}, newer than this Ferry understands \\(${SCHEMA_VERSION}\\)`),
    );
    const { code, stderr } = await serveUntilExit({ FERRY_METADATA__POSTGRES__URL: url });
    assert.notEqual(code, 0);
    assert.match(stderr, /newer than this Ferry understands/);
  });

  test("a push through one replica is visible through another at once (tags, manifest by tag, catalog)", async (t) => {
    const { url, drop } = await freshDatabaseUrl();
    t.after(drop);
    const blobs = await mkdtemp(join(tmpdir(), "ferry-pg-shared-"));
    t.after(() => rm(blobs, { recursive: true, force: true }));
    const env = { FERRY_METADATA__DRIVER: "postgres", FERRY_METADATA__POSTGRES__URL: url, FERRY_STORAGE__FILESYSTEM__PATH: blobs };
    const dirs = await Promise.all([1, 2].map(() => mkdtemp(join(tmpdir(), "ferry-pg-rep-"))));
    t.after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))).then(() => undefined));
    const [a, b] = await Promise.all(dirs.map((data) => startServeProcess({ data, env })));
    t.after(() => Promise.all([a!.stop(), b!.stop()]).then(() => undefined));
    const { createHash } = await import("node:crypto");
    const config = Buffer.from("{}");
    const configDigest = `sha256:${createHash("sha256").update(config).digest("hex")}`;
    const put = await fetch(`${a!.url}/v2/app/blobs/uploads/?digest=${configDigest}`, { method: "POST", body: config, headers: { "content-type": "application/octet-stream" } });
    assert.equal(put.status, 201, await put.text());
    for (let i = 0; i < 5; i++) {
      const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: config.length }, layers: [], annotations: { n: String(i) } }));
      // Warm B's caches with the previous state, then write through A and read through B at once.
      await fetch(`${b!.url}/v2/app/manifests/latest`).then((r) => r.arrayBuffer());
      await fetch(`${b!.url}/v2/app/tags/list`).then((r) => r.arrayBuffer());
      const pushed = await fetch(`${a!.url}/v2/app/manifests/latest`, { method: "PUT", body: manifest, headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" } });
      assert.equal(pushed.status, 201, await pushed.text());
      await fetch(`${a!.url}/v2/app/manifests/v${i}`, { method: "PUT", body: manifest, headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" } }).then((r) => r.arrayBuffer());
      const got = await fetch(`${b!.url}/v2/app/manifests/latest`, { headers: { accept: "application/vnd.oci.image.manifest.v1+json" } });
      assert.equal(got.status, 200);
      assert.deepEqual(Buffer.from(await got.arrayBuffer()), manifest, `push ${i} seen through the other replica`);
      const tags = (await (await fetch(`${b!.url}/v2/app/tags/list`)).json()) as { tags: string[] };
      assert.ok(tags.tags.includes(`v${i}`), `tag v${i} listed through the other replica`);
    }
    assert.deepEqual(((await (await fetch(`${b!.url}/v2/_catalog`)).json()) as { repositories: string[] }).repositories, ["app"]);
  });
});
