/**
 * External clients (skopeo, podman, htpasswd, docker-registry) for e2e tests.
 * On a developer machine without them the test is skipped with a reason; in
 * CI (REQUIRE_E2E_TOOLS=1, set by .ci/run) a missing tool fails the test,
 * so a broken install can never pass as "skipped".
 */
import { spawnSync } from "node:child_process";

export function hasTool(name: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${name}`], { stdio: "ignore" }).status === 0;
}

/** Returns a skip reason for node:test's `skip` option, or false when the tool is there. */
export function skipUnless(...tools: string[]): string | false {
  const missing = tools.filter((tool) => !hasTool(tool));
  if (missing.length === 0) return false;
  if (process.env.REQUIRE_E2E_TOOLS === "1") {
    throw new Error(`required tool(s) missing: ${missing.join(", ")} (.ci/run installs them)`);
  }
  return `needs ${missing.join(", ")} (install: apt-get install -y ${missing.join(" ")})`;
}
