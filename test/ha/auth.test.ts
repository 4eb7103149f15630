/**
 * Access control across replicas: failed-login limits are counted once for
 * all replicas (three replicas must not give an attacker three times the
 * attempts), and a token issued by one replica is accepted by every other.
 */
import { after, before, describe, it } from "node:test";
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import { skipUnlessHaproxy, startReplicaSet, type ReplicaSet } from "../helpers/replicas.js";
import { basic, bcryptHash, bearer, fetchToken } from "../auth/util.js";
import { assertUserLockedEverywhere, authConfig } from "./auth-setup.js";

const skip = skipUnlessHaproxy();
const PER_USER = 6;

describe("auth on three replicas behind haproxy", { skip }, () => {
  let set: ReplicaSet;

  before(async () => {
    if (skip) return;
    const config = authConfig({ alice: "alice-pw", bob: "bob-pw" }, PER_USER);
    set = await startReplicaSet({ config });
  });
  after(async () => {
    await set?.close();
  });

  it(`locks a user name after ${PER_USER} failures in total, whichever replicas they landed on`, async () => {
    await assertUserLockedEverywhere(set, PER_USER);
  });

  it("a token issued by one replica is accepted by every replica, and /token/jwks is the same everywhere", async () => {
    const [a] = set.replicas;
    const issued = await fetchToken(a!.url, basic("bob", "bob-pw"), ["repository:team/app:pull,push"]);
    for (const replica of set.replicas) {
      const response = await fetch(`${replica.url}/v2/team/app/tags/list`, { headers: { authorization: bearer(issued.token) } });
      assert.equal(response.status, 404, `${replica.url}: the token is accepted (the repository does not exist yet)`);
    }
    const keys = await Promise.all(set.replicas.map(async (r) => (await fetch(`${r.url}/token/jwks`)).text()));
    assert.equal(new Set(keys).size, 1, "one key set");
  });
});

describe("rotating the token signing key on replicas behind haproxy", { skip }, () => {
  let set: ReplicaSet;
  let dir: string;
  const keyFile = (name: string) => join(dir, `${name}.pem`);
  const config = (signing: string, verify: string[]) =>
    [
      "auth:",
      "  users:",
      `    bob: { passwordHash: "${bcryptHash("bob-pw")}" }`,
      "  rules:",
      '    - { repositories: ["**"], users: ["*"], actions: ["*"] }',
      "  token:",
      `    signingKey: ${keyFile(signing)}`,
      `    verifyKeys: [${verify.map(keyFile).join(", ")}]`,
    ].join("\n");

  before(async () => {
    if (skip) return;
    dir = await mkdtemp(join(tmpdir(), "ferry-keys-"));
    for (const name of ["old", "new"]) {
      const pair = generateKeyPairSync("ec", { namedCurve: "P-256" });
      await writeFile(keyFile(name), pair.privateKey.export({ format: "pem", type: "pkcs8" }) as string, { mode: 0o600 });
    }
    set = await startReplicaSet({ config: config("old", []) });
  });
  after(async () => {
    await set?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function acceptedEverywhere(token: string): Promise<number[]> {
    return Promise.all(
      set.replicas.map(async (r) => (await fetch(`${r.url}/v2/team/app/tags/list`, { headers: { authorization: bearer(token) } })).status),
    );
  }

  it("logs nobody out: tokens of the old key keep working on every replica through a two-step rolling restart", async () => {
    const scopes = ["repository:team/app:pull"];
    const before = await fetchToken(set.url, basic("bob", "bob-pw"), scopes);
    const rollOut = async (text: string, oldStillValid = true) => {
      await writeFile(join(set.data, "ferry.yaml"), text);
      for (let i = 0; i < set.replicas.length; i++) {
        await set.replicas[i]!.stop();
        await set.restart(i);
        // Mid-rollout, replicas run different configurations: the old token must work on all of them.
        if (oldStillValid) assert.deepEqual(await acceptedEverywhere(before.token), [404, 404, 404], `old token after restarting r${i + 1}`);
      }
    };
    // Step 1: every replica learns the new key (still signing with the old one).
    await rollOut(config("old", ["new"]));
    // Step 2: every replica signs with the new key and still accepts the old one.
    await rollOut(config("new", ["old"]));
    const after = await fetchToken(set.url, basic("bob", "bob-pw"), scopes);
    assert.notEqual(JSON.parse(Buffer.from(after.token.split(".")[0]!, "base64url").toString()).kid, JSON.parse(Buffer.from(before.token.split(".")[0]!, "base64url").toString()).kid, "signed with the new key");
    assert.deepEqual(await acceptedEverywhere(after.token), [404, 404, 404]);
    const jwks = (await (await fetch(`${set.url}/token/jwks`)).json()) as { keys: Array<{ kid: string }> };
    assert.equal(jwks.keys.length, 2, "/token/jwks lists the signing key and the one still accepted");
    // Step 3 (after the longest token lifetime): the old key goes, and its tokens with it.
    await rollOut(config("new", []), false);
    assert.deepEqual(await acceptedEverywhere(before.token), [401, 401, 401], "a key that is gone verifies nothing");
  });
});
