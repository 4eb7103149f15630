/**
 * A burst of simultaneous wrong passwords for one user name, spread over
 * three `ferry serve` replicas on one PostgreSQL database, gets exactly
 * `perUser` password checks (401); every other attempt is refused before its
 * password is checked (429). Each attempt is claimed in the database before
 * the check (MetaStore.claimLoginAttempt), so attempts in flight on other
 * replicas count: checking first and counting after let every attempt in
 * flight through.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServeProcess, type ServeProcess } from "../helpers/serve-process.js";
import { freshDatabaseUrl, skipUnlessPostgres } from "../helpers/postgres.js";
import { basic } from "../auth/util.js";
import { authConfig } from "./auth-setup.js";

const skip = skipUnlessPostgres();
const PER_USER = 5;
const BURST = 36;

describe("a burst of wrong passwords on three replicas sharing PostgreSQL", { skip }, () => {
  let data: string;
  let drop: (() => Promise<void>) | undefined;
  const replicas: ServeProcess[] = [];

  before(async () => {
    if (skip) return;
    data = await mkdtemp(join(tmpdir(), "ferry-login-burst-"));
    const database = await freshDatabaseUrl();
    drop = database.drop;
    const config = join(data, "ferry.yaml");
    await writeFile(
      config,
      authConfig({ alice: "alice-pw" }, PER_USER),
    );
    const env = { FERRY_METADATA__DRIVER: "postgres", FERRY_METADATA__POSTGRES__URL: database.url };
    for (let i = 0; i < 3; i++) replicas.push(await startServeProcess({ data: join(data, `r${i}`), env, args: ["--config", config] }));
  });
  after(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await drop?.();
    if (data) await rm(data, { recursive: true, force: true });
  });

  it(`${BURST} simultaneous wrong passwords: exactly ${PER_USER} are checked (401), the rest refused (429); then the right one is refused too`, async () => {
    const statuses = await Promise.all(
      Array.from({ length: BURST }, async (_, i) => {
        const response = await fetch(`${replicas[i % 3]!.url}/v2/`, { headers: { authorization: basic("alice", `guess-${i}`) } });
        await response.arrayBuffer();
        return response.status;
      }),
    );
    const count = (status: number) => statuses.filter((s) => s === status).length;
    assert.equal(count(401) + count(429), BURST, `statuses: ${statuses.join(",")}`);
    assert.equal(count(401), PER_USER, `password checks allowed: ${count(401)} of ${BURST} (limit ${PER_USER})`);
    for (const replica of replicas) {
      const right = await fetch(`${replica.url}/v2/`, { headers: { authorization: basic("alice", "alice-pw") } });
      assert.equal(right.status, 429, "the name is locked on every replica");
    }
  });
});
