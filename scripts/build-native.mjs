#!/usr/bin/env node
// Builds the optional native addon (native/sendfile: off-thread blob transfers, allocator tuning) with the node-gyp
// that ships with npm. Ferry works without it (blobs are then streamed through
// user space), so ANY failure here prints one warning line and exits 0:
// `npm install` / `npm ci` must never fail because of it.
// Usage: node scripts/build-native.mjs [--verbose]   (npm runs it from `prepare`)
import { spawnSync } from "node:child_process";
import { existsSync, realpathSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const addonDir = join(root, "native", "sendfile");
const output = join(addonDir, "build", "Release", "ferry_sendfile.node");
const verbose = process.argv.includes("--verbose") || process.env.FERRY_NATIVE_VERBOSE === "1";

function skip(reason) {
  console.warn(`ferry: native addon not built (${reason}); blobs will be streamed through Node instead (slower pulls and pushes, nothing else changes). Details: node scripts/build-native.mjs --verbose`);
  process.exit(0);
}

/** npm's bundled node-gyp: npm passes its path to scripts; otherwise look beside npm itself. */
function findNodeGyp() {
  const candidates = [process.env.npm_config_node_gyp];
  if (process.env.npm_execpath) candidates.push(join(dirname(process.env.npm_execpath), "..", "node_modules", "node-gyp", "bin", "node-gyp.js"));
  const npm = spawnSync("sh", ["-c", "command -v npm"], { encoding: "utf8" });
  if (npm.status === 0 && npm.stdout.trim()) {
    try {
      const npmCli = realpathSync(npm.stdout.trim());
      candidates.push(join(dirname(npmCli), "..", "node_modules", "node-gyp", "bin", "node-gyp.js"));
    } catch {
      // fall through to the fixed locations
    }
  }
  candidates.push(join(dirname(process.execPath), "..", "lib", "node_modules", "npm", "node_modules", "node-gyp", "bin", "node-gyp.js"));
  return candidates.find((candidate) => candidate && existsSync(candidate));
}

/** Node's own headers, so node-gyp never tries to download them (only the npm registry is reachable). */
function findNodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = resolve(dirname(process.execPath), "..");
  return existsSync(join(prefix, "include", "node", "node_api.h")) ? prefix : undefined;
}

try {
  if (process.platform !== "linux") skip(`the native addon is used on Linux only, this is ${process.platform}`);
  const nodeGyp = findNodeGyp();
  if (!nodeGyp) skip("npm's node-gyp was not found");
  const nodedir = findNodeDir();
  if (!nodedir) skip("Node's headers (include/node/node_api.h) were not found; set npm_config_nodedir");
  const env = { ...process.env, npm_config_nodedir: nodedir };
  const result = spawnSync(process.execPath, [nodeGyp, "rebuild"], {
    cwd: addonDir,
    env,
    encoding: "utf8",
    stdio: verbose ? "inherit" : "pipe",
    timeout: 300_000,
  });
  if (result.error) skip(`node-gyp could not run: ${result.error.message}`);
  if (result.status !== 0) {
    const text = `${result.stdout ?? ""}\n${result.stderr ?? ""}`;
    const line = text.split("\n").find((l) => /error|not found|No such file/i.test(l) && !/gyp info/.test(l));
    skip(`node-gyp exited with ${result.status ?? result.signal}${line ? `: ${line.trim().slice(0, 200)}` : ""}`);
  }
  const addon = createRequire(import.meta.url)(output);
  if (typeof addon.start !== "function" || typeof addon.cancel !== "function") skip("the built addon does not export start/cancel");
  console.log(`ferry: native addon built: ${output}`);
} catch (error) {
  skip(error instanceof Error ? error.message.split("\n")[0] : String(error));
}
