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

/** The Debian package that provides a command, where its name differs from the command's. */
const DEBIAN_PACKAGE: Record<string, string> = { htpasswd: "apache2-utils" };

export function debianPackageFor(tool: string): string {
  return DEBIAN_PACKAGE[tool] ?? tool;
}

/** Returns a skip reason for node:test's `skip` option, or false when the tool is there. */
export function skipUnless(...tools: string[]): string | false {
  const missing = tools.filter((tool) => !hasTool(tool));
  if (missing.length === 0) return false;
  const packages = [...new Set(missing.map(debianPackageFor))];
  if (process.env.REQUIRE_E2E_TOOLS === "1") {
    throw new Error(`required tool(s) missing: ${missing.join(", ")} (.ci/run installs them: apt-get install -y ${packages.join(" ")})`);
  }
  return `needs ${missing.join(", ")} (install: apt-get install -y ${packages.join(" ")})`;
}
