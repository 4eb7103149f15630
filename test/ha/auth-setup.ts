/**
 * What the HA auth tests share: the auth block they configure, and the check
 * that a user name's failed-login limit holds over all replicas behind the
 * load balancer (whether the replicas share a data directory or only
 * PostgreSQL).
 */
import assert from "node:assert/strict";
import type { ReplicaSet } from "../helpers/replicas.js";
import { basic, bcryptHash } from "../auth/util.js";

/** An `auth:` block with `users` (name → password), everyone allowed everything, and a per-user limit of `perUser` failures in 10 minutes. */
export function authConfig(users: Record<string, string>, perUser: number): string {
  return [
    "auth:",
    "  users:",
    ...Object.entries(users).map(([name, password]) => `    ${name}: { passwordHash: "${bcryptHash(password)}" }`),
    "  rules:",
    '    - { repositories: ["**"], users: ["*"], actions: ["*"] }',
    "  rateLimit:",
    `    perUser: ${perUser}`,
    "    perAddress: 1000",
    "    window: 10m",
  ].join("\n");
}

/**
 * Guesses alice's password 3 × `perUser` times through the load balancer:
 * the guesses must land on all three replicas, the first `perUser` get 401 and
 * the rest 429; then every replica refuses alice's right password and still lets bob in.
 */
export async function assertUserLockedEverywhere(set: ReplicaSet, perUser: number): Promise<void> {
  const statuses: number[] = [];
  const replicas = new Set<string>();
  for (let i = 0; i < perUser * 3; i++) {
    const response = await fetch(`${set.url}/v2/`, { headers: { authorization: basic("alice", `guess-${i}`) } });
    statuses.push(response.status);
    replicas.add(response.headers.get("x-ferry-replica") ?? "?");
    await response.arrayBuffer();
  }
  assert.equal(replicas.size, 3, "the guesses were spread over the three replicas");
  assert.deepEqual(statuses.slice(0, perUser), Array(perUser).fill(401), "the first guesses are counted");
  assert.deepEqual(statuses.slice(perUser), Array(perUser * 2).fill(429), `after ${perUser} failures, every replica refuses (${statuses})`);
  // The right password is refused too, on every replica directly; another user is not affected.
  for (const replica of set.replicas) {
    assert.equal((await fetch(`${replica.url}/v2/`, { headers: { authorization: basic("alice", "alice-pw") } })).status, 429);
    assert.equal((await fetch(`${replica.url}/v2/`, { headers: { authorization: basic("bob", "bob-pw") } })).status, 200);
  }
}
