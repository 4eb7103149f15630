/** The team-registry example in docs/auth.md loads, and its permission table is what the registry does. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, writeFile, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import YAML from "yaml";
import { startTestRegistry } from "../helpers/registry.js";
import type { RepositoryAction } from "../../src/auth/access.js";

test("docs/auth.md example: config loads and the documented table holds", async () => {
  const doc = await readFile("docs/auth.md", "utf8");
  const yaml = /```yaml\n([\s\S]*?)```/.exec(doc)![1]!;
  const parsed = YAML.parse(yaml) as { auth: { htpasswd: string } };
  const dir = await mkdtemp(join(tmpdir(), "ferry-docs-"));
  parsed.auth.htpasswd = join(dir, "htpasswd");
  await writeFile(parsed.auth.htpasswd, "");
  const registry = await startTestRegistry({ auth: parsed.auth });
  try {
    const access = registry.registry.services.access;
    const table: Record<string, Record<string, string>> = {
      alice: { "base/alpine": "p", "team-a/app": "pud", "team-b/api": "p", "tools/jq": "p", "ci/build": "" },
      carol: { "base/alpine": "p", "team-a/app": "", "team-b/api": "pud", "tools/jq": "p", "ci/build": "" },
      "ci-robot": { "base/alpine": "p", "team-a/app": "", "team-b/api": "", "tools/jq": "p", "ci/build": "pu" },
      olga: { "base/alpine": "pud", "team-a/app": "pud", "team-b/api": "pud", "tools/jq": "pud", "ci/build": "pud" },
    };
    const letters: Record<RepositoryAction, string> = { pull: "p", push: "u", delete: "d" };
    for (const [user, row] of Object.entries(table)) {
      for (const [repo, expected] of Object.entries(row)) {
        const got = (["pull", "push", "delete"] as RepositoryAction[]).filter((a) => access.can({ user, via: "basic" }, repo, a)).map((a) => letters[a]).join("");
        assert.equal(got, expected, `${user} on ${repo}`);
      }
    }
    assert.equal(access.can({ user: null }, "base/alpine", "pull"), true);
    assert.equal(access.can({ user: null }, "tools/jq", "pull"), false);
  } finally {
    await registry.close();
  }
});
