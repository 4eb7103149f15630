/**
 * Access control across replicas: failed-login limits are counted once for
 * all replicas (three replicas must not give an attacker three times the
 * attempts), and a token issued by one replica is accepted by every other.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { skipUnlessHaproxy, startReplicaSet, type ReplicaSet } from "../helpers/replicas.js";
import { basic, bcryptHash, bearer, fetchToken } from "../auth/util.js";

const skip = skipUnlessHaproxy();
const PER_USER = 6;

describe("auth on three replicas behind haproxy", { skip }, () => {
  let set: ReplicaSet;

  before(async () => {
    if (skip) return;
    const config = [
      "auth:",
      "  users:",
      `    alice: { passwordHash: "${bcryptHash("alice-pw")}" }`,
      `    bob: { passwordHash: "${bcryptHash("bob-pw")}" }`,
      "  rules:",
      '    - { repositories: ["**"], users: ["*"], actions: ["*"] }',
      "  rateLimit:",
      `    perUser: ${PER_USER}`,
      "    perAddress: 1000",
      "    window: 10m",
    ].join("\n");
    set = await startReplicaSet({ config });
  });
  after(async () => {
    await set?.close();
  });

  it(`locks a user name after ${PER_USER} failures in total, whichever replicas they landed on`, async () => {
    const statuses: number[] = [];
    const replicas = new Set<string>();
    for (let i = 0; i < PER_USER * 3; i++) {
      const response = await fetch(`${set.url}/v2/`, { headers: { authorization: basic("alice", `guess-${i}`) } });
      statuses.push(response.status);
      replicas.add(response.headers.get("x-ferry-replica") ?? "?");
      await response.arrayBuffer();
    }
    assert.equal(replicas.size, 3, "the guesses were spread over the three replicas");
    assert.deepEqual(statuses.slice(0, PER_USER), Array(PER_USER).fill(401), "the first guesses are counted");
    assert.deepEqual(statuses.slice(PER_USER), Array(PER_USER * 2).fill(429), `after ${PER_USER} failures, every replica refuses (${statuses})`);
    // The right password is refused too, on every replica directly; another user is not affected.
    for (const replica of set.replicas) {
      assert.equal((await fetch(`${replica.url}/v2/`, { headers: { authorization: basic("alice", "alice-pw") } })).status, 429);
      assert.equal((await fetch(`${replica.url}/v2/`, { headers: { authorization: basic("bob", "bob-pw") } })).status, 200);
    }
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
