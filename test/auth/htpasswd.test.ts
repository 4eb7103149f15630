/**
 * htpasswd files: entries written by Apache's `htpasswd -B` ($2y$) and by
 * `ferry user add` ($2b$) log in; MD5, SHA-1, crypt and plain-text entries
 * stop the registry at start-up with a message naming the file, line and user.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startTestRegistry } from "../helpers/registry.js";
import { skipUnless } from "../helpers/tools.js";
import { parseHtpasswd, HtpasswdError } from "../../src/auth/htpasswd.js";
import { basic, bcryptHash } from "./util.js";

const FERRY = resolve("dist/src/cli/main.js");

async function tempFile(name: string, content = ""): Promise<string> {
  const file = join(await mkdtemp(join(tmpdir(), "ferry-htpasswd-")), name);
  await writeFile(file, content);
  return file;
}

async function status(url: string, authorization: string): Promise<number> {
  return (await fetch(`${url}/v2/`, { headers: { authorization } })).status;
}

test("entries written by Apache htpasswd -B are read and verified", { skip: skipUnless("htpasswd") }, async () => {
  const file = await tempFile("htpasswd");
  execFileSync("htpasswd", ["-B", "-b", "-C", "5", file, "alice", "correct horse"]);
  execFileSync("htpasswd", ["-B", "-b", "-C", "5", file, "bob", "pä:ss wörd"]);
  assert.match(await readFile(file, "utf8"), /^alice:\$2y\$05\$/m, "Apache writes $2y$");
  const registry = await startTestRegistry({ auth: { htpasswd: file } });
  try {
    assert.equal(await status(registry.url, basic("alice", "correct horse")), 200);
    assert.equal(await status(registry.url, basic("bob", "pä:ss wörd")), 200, "colons and UTF-8 in passwords");
    assert.equal(await status(registry.url, basic("alice", "correct horse ")), 401);
    assert.equal(await status(registry.url, basic("carol", "correct horse")), 401);
  } finally {
    await registry.close();
  }
});

test("ferry user add writes entries Apache htpasswd verifies, and the running registry picks them up", { skip: skipUnless("htpasswd") }, async () => {
  const file = await tempFile("htpasswd", "# team registry users\n");
  const registry = await startTestRegistry({ auth: { htpasswd: file } });
  try {
    const add = spawnSync(process.execPath, [FERRY, "user", "add", "--file", file, "--password-stdin", "--cost", "10", "robot"], { input: "s3cret!\n" });
    assert.equal(add.status, 0, add.stderr.toString());
    assert.match(add.stdout.toString(), /added user robot/);
    assert.equal(spawnSync("htpasswd", ["-vb", file, "robot", "s3cret!"]).status, 0, "Apache's htpasswd verifies the entry");
    assert.match(await readFile(file, "utf8"), /^# team registry users\n/, "comments kept");
    await new Promise((r) => setTimeout(r, 2200));
    assert.equal(await status(registry.url, basic("robot", "s3cret!")), 200, "no restart needed");
    const rm = spawnSync(process.execPath, [FERRY, "user", "rm", "--file", file, "robot"]);
    assert.equal(rm.status, 0, rm.stderr.toString());
    await new Promise((r) => setTimeout(r, 2200));
    assert.equal(await status(registry.url, basic("robot", "s3cret!")), 401, "removed user is gone");
    const again = spawnSync(process.execPath, [FERRY, "user", "rm", "--file", file, "robot"]);
    assert.notEqual(again.status, 0);
    const noFile = spawnSync(process.execPath, [FERRY, "user", "add", "x", "--password-stdin"], { input: "pw\n", env: { ...process.env, FERRY_CONFIG: "" } });
    assert.notEqual(noFile.status, 0);
    assert.match(noFile.stderr.toString(), /--file/);
  } finally {
    await registry.close();
  }
});

const WEAK: Array<[string, string, RegExp]> = [
  ["md5", "$apr1$abcdefgh$0123456789abcdefghijkl", /MD5 \(\$apr1\$\)/],
  ["sha", "{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=", /SHA-1/],
  ["crypt", "rqXexS6ZhobKA", /DES crypt/],
  ["plain", "hunter2", /plain text/],
];

for (const [kind, hash, message] of WEAK) {
  test(`a ${kind} entry is refused at start-up, naming the file, line and user`, async () => {
    const file = await tempFile("htpasswd", `alice:${bcryptHash("pw")}\n\nweak:${hash}\n`);
    await assert.rejects(startTestRegistry({ auth: { htpasswd: file } }), (error: Error) => {
      assert.ok(error instanceof HtpasswdError);
      assert.match(error.message, message);
      assert.ok(error.message.includes(`${file} line 3 (user "weak")`), error.message);
      assert.match(error.message, /htpasswd -B/);
      return true;
    });
  });
}

test("entries Apache writes with -m (MD5), -s (SHA) and -d (crypt) are refused", { skip: skipUnless("htpasswd") }, async () => {
  for (const flag of ["-m", "-s", "-d"]) {
    const file = await tempFile("htpasswd");
    execFileSync("htpasswd", [flag, "-b", file, "old", "pw"]);
    assert.throws(() => parseHtpasswd(execFileSync("cat", [file]).toString(), file), /line 1 \(user "old"\)/, flag);
  }
});

test("malformed lines, duplicates and a missing file are clear errors", async () => {
  assert.throws(() => parseHtpasswd("no-colon-here\n", "f"), /f line 1: expected NAME:HASH/);
  const hash = bcryptHash("x");
  assert.throws(() => parseHtpasswd(`a:${hash}\na:${hash}\n`, "f"), /appears twice/);
  assert.deepEqual([...parseHtpasswd(`# c\r\na:${hash}\r\n`, "f").keys()], ["a"]);
  await assert.rejects(startTestRegistry({ auth: { htpasswd: "/nonexistent/htpasswd" } }), /cannot read htpasswd file \/nonexistent\/htpasswd: ENOENT/);
});

test("config users: bcrypt hashes only, with a message naming the key", async () => {
  await assert.rejects(startTestRegistry({ auth: { users: { bob: { passwordHash: "$apr1$x$y" } } } }), /auth\.users\.bob\.passwordHash.*bcrypt/s);
});
