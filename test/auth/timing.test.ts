/**
 * User names must not be enumerable by timing (hardening issue, item 6): a
 * wrong password for an existing user and any password for an unknown user
 * cost the same. The dummy hash for unknown users has the cost real users'
 * hashes have (it was fixed at 10 while `ferry user add` writes 12), and
 * follows the htpasswd file when it changes.
 *
 * Timing is measured at cost 8 (about 20 ms a check, so a before-the-fix
 * dummy at cost 10 is four times slower); cost 12 is checked by looking at
 * the dummy's cost, not by timing it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import bcrypt from "bcryptjs";
import { pino } from "pino";
import { UserDirectory } from "../../src/auth/users.js";
import { startTestRegistry } from "../helpers/registry.js";
import { basic } from "./util.js";

const SILENT = pino({ level: "silent" });
// Each failed login over HTTP now makes two fsync'd store writes (the claim, then the failure), whose latency
// spikes when the suite runs beside it: enough pairs that the medians see past them.
const TRIES = 25;
/** Allowed ratio between the two medians: wide enough for a busy machine, far below the 4x of cost 10 vs 8. */
const TOLERANCE = 1.6;

async function htpasswd(lines: string[]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "ferry-timing-"));
  const file = join(dir, "htpasswd");
  await writeFile(file, lines.map((l) => `${l}\n`).join(""));
  return file;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** Median durations of two operations, interleaved so that machine load hits both alike. */
async function medians(a: () => Promise<unknown>, b: () => Promise<unknown>): Promise<[number, number]> {
  const ta: number[] = [];
  const tb: number[] = [];
  await a();
  await b(); // warm-up: first calls pay for JIT and connection set-up
  for (let i = 0; i < TRIES; i++) {
    let start = performance.now();
    await a();
    ta.push(performance.now() - start);
    start = performance.now();
    await b();
    tb.push(performance.now() - start);
  }
  return [median(ta), median(tb)];
}

function assertClose([known, unknown]: [number, number], what: string): void {
  const ratio = Math.max(known, unknown) / Math.min(known, unknown);
  assert.ok(ratio < TOLERANCE, `${what}: existing user ${known.toFixed(1)} ms, unknown user ${unknown.toFixed(1)} ms (ratio ${ratio.toFixed(2)})`);
}

const cost8 = [`alice:${bcrypt.hashSync("alice-pw", 8)}`, `bob:${bcrypt.hashSync("bob-pw", 8)}`];

test("UserDirectory.verify: a wrong password and an unknown name take the same time", async () => {
  const users = new UserDirectory({ htpasswd: await htpasswd(cost8), users: {}, groups: {} }, SILENT);
  await users.load();
  let n = 0;
  const result = await medians(
    () => users.verify("alice", `wrong-${n++}`),
    () => users.verify(`nobody-${n++}`, "wrong"),
  );
  assertClose(result, "verify()");
  assert.equal(users.dummyCost, 8);
  assert.equal(await users.verify("alice", "alice-pw"), true);
});

test("over HTTP: a 401 for an existing user takes as long as one for an unknown user", async () => {
  const registry = await startTestRegistry({ auth: { htpasswd: await htpasswd(cost8), rateLimit: { perUser: 1000, perAddress: 1000 } } });
  try {
    let n = 0;
    const attempt = async (user: string) => {
      const response = await fetch(`${registry.url}/v2/`, { headers: { authorization: basic(user, `wrong-${n++}`) } });
      assert.equal(response.status, 401);
      return response.text();
    };
    assertClose(await medians(() => attempt("alice"), () => attempt(`nobody-${n}`)), "GET /v2/");
  } finally {
    await registry.close();
  }
});

/** A well-formed bcrypt hash of the given cost; never checked here, so it need not be a real one (generating cost 12 is slow). */
function fakeHash(cost: number, seed: string): string {
  const chars = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  let body = "";
  for (let i = 0; i < 53; i++) body += chars[(seed.charCodeAt(i % seed.length) * 7 + i * 13) % 64];
  return `$2y$${String(cost).padStart(2, "0")}$${body}`;
}

test("the dummy hash has the cost most users have (cost 12 from `ferry user add`), and follows the file", async () => {
  const file = await htpasswd([`alice:${fakeHash(12, "a")}`, `bob:${fakeHash(12, "b")}`, `carol:${fakeHash(10, "c")}`]);
  const users = new UserDirectory(
    { htpasswd: file, users: { robot: { passwordHash: fakeHash(12, "r"), groups: [] } }, groups: {} },
    SILENT,
    { reloadCheckMs: 0 },
  );
  await users.load();
  assert.equal(users.dummyCost, 12, "three cost-12 hashes against one cost-10");
  // `ferry user add` on a running registry: the file now mostly holds cost-6 hashes.
  await new Promise((r) => setTimeout(r, 20)); // a different mtime
  await writeFile(file, [`alice:${fakeHash(6, "a")}`, `bob:${fakeHash(6, "b")}`, `dave:${fakeHash(6, "d")}`].map((l) => `${l}\n`).join(""));
  await users.refresh();
  assert.equal(users.dummyCost, 6, "re-derived when the file reloads");
});

test("a registry with config users only derives the cost from them", async () => {
  const users = new UserDirectory({ users: { a: { passwordHash: fakeHash(5, "a"), groups: [] } }, groups: {} }, SILENT);
  await users.load();
  assert.equal(users.dummyCost, 5);
});

test("ferry user add keeps the file at one cost: by default the cost its entries already have", async () => {
  const { spawnSync } = await import("node:child_process");
  const { readFile } = await import("node:fs/promises");
  const { resolve } = await import("node:path");
  const file = await htpasswd([`alice:${fakeHash(10, "a")}`, `bob:${fakeHash(10, "b")}`]);
  const add = (args: string[]) =>
    spawnSync(process.execPath, [resolve("dist/src/cli/main.js"), "user", "add", "--file", file, "--password-stdin", ...args], { input: "pw\n", encoding: "utf8" });
  const plain = add(["carol"]);
  assert.equal(plain.status, 0, plain.stderr);
  assert.match(await readFile(file, "utf8"), /^carol:\$2[aby]\$10\$/m, "cost 10 like the others, not 12");
  const other = add(["--cost", "11", "dave"]);
  assert.equal(other.status, 0, other.stderr);
  assert.match(other.stderr, /most entries .* have bcrypt cost 10, this one gets 11/);
});
