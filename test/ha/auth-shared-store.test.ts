/**
 * Auth state shared by replicas that share ONLY the metadata database
 * (PostgreSQL) and the blob store: each replica has a data directory of its
 * own, as on separate hosts. The failed-login limit is counted once across
 * them, a token issued by one is accepted by the others, and rotating the
 * shared signing key (`ferry token rotate`) logs nobody out.
 */
import { after, before, describe, it } from "node:test";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { existsSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";
import { sharedMetadata, skipUnlessHaproxy, startReplicaSet, type ReplicaSet } from "../helpers/replicas.js";
import { skipUnlessPostgres } from "../helpers/postgres.js";
import { basic, bearer, fetchToken } from "../auth/util.js";
import { assertUserLockedEverywhere, authConfig } from "./auth-setup.js";

const skip = skipUnlessHaproxy() || skipUnlessPostgres();
const PER_USER = 6;

function kidOf(token: string): string {
  return (JSON.parse(Buffer.from(token.split(".")[0]!, "base64url").toString()) as { kid: string }).kid;
}

describe("auth on three replicas with separate data directories, sharing PostgreSQL", { skip }, () => {
  let set: ReplicaSet;
  let metadata: { url: string; drop(): Promise<void> } | undefined;

  before(async () => {
    if (skip) return;
    metadata = await sharedMetadata();
    assert.ok(metadata, "PostgreSQL is available");
    const config = authConfig({ alice: "alice-pw", bob: "bob-pw" }, PER_USER);
    set = await startReplicaSet({ config, postgresUrl: metadata.url, separateData: true });
  });
  after(async () => {
    await set?.close();
    await metadata?.drop();
  });

  it("keeps no auth state in the data directories", () => {
    for (let i = 0; i < 3; i++) {
      assert.equal(existsSync(join(set.data, `replica-${i}`, "auth", "token-signing-key-es256.pem")), false, `replica ${i} generated no key of its own`);
      assert.equal(existsSync(join(set.data, `replica-${i}`, "metadata.db.logins")), false);
    }
  });

  it("a token issued by one replica is accepted by the others, and /token/jwks is the same everywhere", async () => {
    const [r1] = set.replicas;
    const issued = await fetchToken(r1!.url, basic("bob", "bob-pw"), ["repository:team/app:pull,push"]);
    for (const replica of set.replicas) {
      const response = await fetch(`${replica.url}/v2/team/app/tags/list`, { headers: { authorization: bearer(issued.token) } });
      assert.equal(response.status, 404, `${replica.url}: the token is accepted (the repository does not exist yet)`);
    }
    const keys = await Promise.all(set.replicas.map(async (r) => (await fetch(`${r.url}/token/jwks`)).text()));
    assert.equal(new Set(keys).size, 1, "one key set");
    assert.equal((JSON.parse(keys[0]!) as { keys: unknown[] }).keys.length, 1, "one key: the replicas agreed on the first one");
    // A forged token (right kid, wrong key) is refused by every replica.
    const forged = `${issued.token.split(".").slice(0, 2).join(".")}.${Buffer.alloc(64, 1).toString("base64url")}`;
    for (const replica of set.replicas) {
      assert.equal((await fetch(`${replica.url}/v2/team/app/tags/list`, { headers: { authorization: bearer(forged) } })).status, 401);
    }
  });

  it(`locks a user name after ${PER_USER} failures in total, whichever replicas (hosts) they landed on`, async () => {
    await assertUserLockedEverywhere(set, PER_USER);
  });

  it("`ferry token rotate` adds a signing key; tokens of the old key stay valid on every replica", async () => {
    const scopes = ["repository:team/app:pull"];
    const old = await fetchToken(set.url, basic("bob", "bob-pw"), scopes);
    const { stdout } = await promisify(execFile)(process.execPath, ["dist/src/cli/main.js", "token", "rotate", "--config", join(set.data, "ferry.yaml")], {
      env: { PATH: process.env.PATH ?? "", FERRY_METADATA__DRIVER: "postgres", FERRY_METADATA__POSTGRES__URL: metadata!.url },
    });
    assert.match(stdout, /generation 2 /);
    assert.doesNotMatch(stdout, /PRIVATE KEY/, "the key itself is never printed");
    // A restarted replica loads the set at once and signs with the new key (the others within 30 s).
    await set.replicas[0]!.stop();
    await set.restart(0);
    const fresh = await fetchToken(set.replicas[0]!.url, basic("bob", "bob-pw"), scopes);
    assert.notEqual(kidOf(fresh.token), kidOf(old.token), "signed with the new key");
    for (const replica of set.replicas) {
      for (const token of [old.token, fresh.token]) {
        const status = (await fetch(`${replica.url}/v2/team/app/tags/list`, { headers: { authorization: bearer(token) } })).status;
        assert.equal(status, 404, `${replica.url} accepts the ${token === old.token ? "old" : "new"} key's token`);
      }
    }
    for (const replica of set.replicas) {
      const jwks = (await (await fetch(`${replica.url}/token/jwks`)).json()) as { keys: Array<{ kid: string; d?: string }> };
      assert.deepEqual(jwks.keys.map((k) => k.kid).sort(), [kidOf(old.token), kidOf(fresh.token)].sort(), `${replica.url} lists both keys`);
      assert.ok(jwks.keys.every((k) => k.d === undefined), "public halves only");
    }
  });
});
