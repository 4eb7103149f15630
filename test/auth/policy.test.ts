/** Repository patterns and the policy, as the docs describe them. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { compileRepositoryPattern } from "../../src/auth/glob.js";
import { Policy } from "../../src/auth/policy.js";
import { loadConfig } from "../../src/config/load.js";

const cases: Array<[string, string[], string[]]> = [
  ["team-a/**", ["team-a/app", "team-a/x/y/z"], ["team-a", "team-ab/app", "other/team-a/app"]],
  ["*", ["alpine", "x-y.z"], ["library/alpine"]],
  ["library/*", ["library/alpine"], ["library", "library/a/b"]],
  ["**", ["a", "a/b/c"], []],
  ["**/cache", ["cache", "a/cache", "a/b/cache"], ["a/cache/x", "acache"]],
  ["a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/xb", "b"]],
  ["app-?", ["app-1"], ["app-10", "app-/"]],
  ["v1.0", ["v1.0"], ["v1x0"]],
];

for (const [pattern, yes, no] of cases) {
  test(`pattern ${pattern}`, () => {
    const regex = compileRepositoryPattern(pattern);
    for (const name of yes) assert.ok(regex.test(name), `${pattern} matches ${name}`);
    for (const name of no) assert.ok(!regex.test(name), `${pattern} does not match ${name}`);
  });
}

test("bad patterns are config errors naming the key", () => {
  assert.throws(() => compileRepositoryPattern("team**"), /whole path segment/);
  assert.throws(() => compileRepositoryPattern("Team/A"), /may only contain/);
  assert.throws(() => loadConfig({ overrides: { auth: { public: ["a//b"] } } }), /auth\.public\.0.*empty path segment/s);
  assert.throws(() => loadConfig({ overrides: { auth: { rules: [{ repositories: ["x"], actions: ["write"] }] } } }), /auth\.rules\.0\.actions/);
  assert.throws(() => loadConfig({ overrides: { auth: { token: { trust: [{ issuer: "x" }] } } } }), /exactly one of publicKey, jwks or jwksUrl/);
});

test("deny by default; rules add up; admins may do everything; public is pull only", () => {
  const policy = new Policy({
    rules: [
      { repositories: ["team-a/**"], users: [], groups: ["devs"], actions: ["pull"] },
      { repositories: ["team-a/app"], users: ["bob"], groups: [], actions: ["push"] },
      { repositories: ["shared/*"], users: ["*"], groups: [], actions: ["pull"] },
    ],
    public: ["base/*"],
    admins: { users: ["root"], groups: ["ops"] },
  });
  const actions = (user: string | null, groups: string[], repo: string) => [...policy.allowed(user, groups, repo)].sort().join(",");
  assert.equal(actions("bob", ["devs"], "team-a/app"), "pull,push");
  assert.equal(actions("bob", ["devs"], "team-a/other"), "pull");
  assert.equal(actions("bob", [], "team-a/other"), "");
  assert.equal(actions("eve", [], "shared/x"), "pull", "* means every authenticated user");
  assert.equal(actions(null, [], "shared/x"), "", "but not anonymous callers");
  assert.equal(actions(null, [], "base/alpine"), "pull");
  assert.equal(actions("eve", [], "base/alpine"), "pull");
  assert.equal(actions("root", [], "anything/at/all"), "delete,pull,push");
  assert.equal(actions("eve", ["ops"], "anything"), "delete,pull,push");
  assert.equal(policy.isAdmin(null, ["ops"]), false);
});
