/**
 * The project's spec-derived HTTP tests (push, pull, list, delete, referrers,
 * chunked uploads, tag parameters, caches) run once more against three
 * replicas behind haproxy: startTestRegistry() starts a replica set instead of
 * an in-process registry when FERRY_TEST_THROUGH_LB=1 (test/helpers/registry.ts).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { skipUnlessHaproxy } from "../helpers/replicas.js";

const skip = skipUnlessHaproxy();

/**
 * Files that talk to the registry only over HTTP (a file that reaches into the process fails loudly).
 * listing-cache and manifest-cache open the data directory's database themselves, which PostgreSQL
 * replicas do not have; replicas.test.ts checks their subject (a write on one replica, the next read
 * on another) across real replicas instead.
 */
const SPEC_FILES = [
  "blobs",
  "manifests",
  "uploads",
  "listing",
  "tag-params",
  "sha512",
  "response-headers",
  "concurrency",
].map((name) => `dist/test/http/${name}.test.js`);

test("the spec tests pass through the load balancer", { skip, timeout: 15 * 60_000 }, async () => {
  // Without NODE_TEST_CONTEXT, or node:test takes the child for a recursive run and runs nothing.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  const child = spawn(process.execPath, ["--test", "--test-concurrency=1", "--test-reporter=tap", ...SPEC_FILES], {
    env: { ...env, FERRY_TEST_THROUGH_LB: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (chunk: Buffer) => (out += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (out += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  const count = (key: string) => Number(new RegExp(`^# ${key} (\\d+)$`, "m").exec(out)?.[1] ?? -1);
  const failures = out.split("\n").filter((line) => /^\s*not ok/.test(line));
  assert.equal(count("fail"), 0, `failing through the load balancer:\n${failures.join("\n")}\n${out.slice(-3000)}`);
  assert.ok(count("pass") >= 100, `only ${count("pass")} tests ran`);
  assert.equal(code, 0);
});
