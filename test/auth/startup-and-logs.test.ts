/**
 * Without `auth` Ferry is open and warns loudly when listening beyond
 * loopback; with it, no warning. Credentials and tokens never reach the log.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { loadConfig } from "../../src/config/load.js";
import { startRegistry } from "../../src/server.js";
import { basic, bcryptHash, bearer, fetchToken } from "./util.js";

const FERRY = resolve("dist/src/cli/main.js");

/** Starts `ferry serve`, waits for the listening line, returns everything it printed by then. */
async function serveOutput(args: string[]): Promise<string> {
  const data = await mkdtemp(join(tmpdir(), "ferry-serve-"));
  const child = spawn(process.execPath, [FERRY, "serve", "--data", data, ...args], { env: { PATH: process.env.PATH ?? "" } });
  let output = "";
  try {
    await new Promise<void>((resolveStarted, reject) => {
      const timer = setTimeout(() => reject(new Error(`no start-up line: ${output}`)), 15_000);
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes("listening on")) {
          clearTimeout(timer);
          // Logs are written asynchronously (buffered): give the warning time to land.
          setTimeout(resolveStarted, 800);
        }
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", onData);
      child.once("exit", (code) => reject(new Error(`exited ${code}: ${output}`)));
    });
  } finally {
    child.kill("SIGTERM");
  }
  return output;
}

test("open registry on a non-loopback address: loud warning; on loopback: none", async () => {
  assert.match(await serveOutput(["--listen", "0.0.0.0:0"]), /NO ACCESS CONTROL/);
  assert.doesNotMatch(await serveOutput(["--listen", "127.0.0.1:0"]), /NO ACCESS CONTROL/);
});

test("with auth configured there is no open-registry warning", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ferry-serve-cfg-"));
  const config = join(dir, "ferry.yaml");
  await writeFile(config, `auth:\n  users:\n    admin:\n      passwordHash: "${bcryptHash("pw")}"\n  admins:\n    users: [admin]\n`);
  assert.doesNotMatch(await serveOutput(["--listen", "0.0.0.0:0", "--config", config]), /NO ACCESS CONTROL/);
});

test("passwords, Basic headers, tokens and refresh tokens never appear in the log", async () => {
  let log = "";
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      log += chunk.toString();
      callback();
    },
  });
  const data = await mkdtemp(join(tmpdir(), "ferry-logs-"));
  const config = loadConfig({
    overrides: {
      listen: "127.0.0.1:0",
      data,
      log: { level: "trace", accessLog: true },
      auth: { users: { alice: { passwordHash: bcryptHash("Sup3r-Secret") } }, rules: [{ repositories: ["a/**"], users: ["alice"], actions: ["pull"] }] },
    },
  });
  const registry = await startRegistry(config, { logger: pino({ level: "trace" }, sink) });
  try {
    const good = basic("alice", "Sup3r-Secret");
    const bad = basic("alice", "Wrong-Guess-123");
    await fetch(`${registry.url}/v2/`, { headers: { authorization: bad } });
    const token = await fetchToken(registry.url, good, ["repository:a/b:pull"], "&offline_token=true&client_id=x");
    await fetch(`${registry.url}/v2/a/b/tags/list`, { headers: { authorization: bearer(token.token) } });
    await fetch(`${registry.url}/v2/a/b/tags/list`, { headers: { authorization: bearer(token.token.slice(0, -3) + "abc") } });
    await fetch(`${registry.url}/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: `grant_type=refresh_token&service=ferry&refresh_token=${token.refresh_token}`,
    });
    await fetch(`${registry.url}/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "grant_type=password&service=ferry&username=alice&password=Wrong-Guess-123",
    });
    await new Promise((r) => setTimeout(r, 200));
    assert.match(log, /failed login/, "failed logins are logged (without the password)");
    for (const secret of ["Sup3r-Secret", "Wrong-Guess-123", good.slice(6), bad.slice(6), token.token.split(".")[2]!, token.refresh_token!.split(".")[2]!]) {
      assert.ok(!log.includes(secret), `log leaks ${secret.slice(0, 12)}…`);
    }
  } finally {
    await registry.close();
  }
});
