/**
 * Start-up as a new user meets it: mistakes are named the way the user wrote
 * them (the file key, the variable or the flag) with the closest real key,
 * an unwritable data directory says so in one sentence, `--listen :PORT`
 * means every interface, the banner is a JSON log line, and a server
 * started by npm does not outlive the npm process that was stopped.
 */
import { describe, it } from "node:test";
import { configErrorMessage } from "../helpers/config-error.js";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { loadConfig } from "../../src/config/load.js";
import { VERSION } from "../../src/cli/version.js";
import { debianPackageFor } from "../helpers/tools.js";
import { freePort } from "../helpers/serve-process.js";

const FERRY = resolve("dist/src/cli/main.js");


async function withDir<T>(body: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "ferry-ux-"));
  await chmod(dir, 0o755);
  try {
    return await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Runs `ferry serve` to completion (it is expected to refuse to start). */
function serveFails(args: string[], env: NodeJS.ProcessEnv = {}, uid?: number): { status: number | null; stderr: string } {
  const result = spawnSync(process.execPath, [FERRY, "serve", ...args], {
    env: { PATH: process.env.PATH ?? "", ...env },
    encoding: "utf8",
    timeout: 20_000,
    ...(uid === undefined ? {} : { uid, gid: uid }),
  });
  return { status: result.status, stderr: result.stderr };
}

describe("configuration mistakes are named as written, with the closest key", () => {
  it("a misspelled key in the file gets a did-you-mean, nested and top-level", () =>
    withDir(async (dir) => {
      const file = join(dir, "ferry.yaml");
      await writeFile(file, "listne: 127.0.0.1:5000\nlog:\n  levle: debug\n  accesslog: false\n");
      const message = configErrorMessage(() => loadConfig({ file, onWarning: () => undefined }));
      assert.match(message, /config key listne in .*ferry\.yaml: not a known setting; did you mean listen\?/);
      assert.match(message, /log\.levle.*did you mean log\.level\?/);
      assert.match(message, /log\.accesslog.*did you mean log\.accessLog\?/);
    }));

  it("a key nobody could mean gets no guess", () =>
    withDir(async (dir) => {
      const file = join(dir, "ferry.yaml");
      await writeFile(file, "wibblewobble: 1\n");
      const message = configErrorMessage(() => loadConfig({ file, onWarning: () => undefined }));
      assert.match(message, /config key wibblewobble in .*: not a known setting/);
      assert.doesNotMatch(message, /did you mean/);
    }));

  it("inside a list item: the guess comes from the item's keys, and the variable hint is one that works (the whole list)", () =>
    withDir(async (dir) => {
      const file = join(dir, "ferry.yaml");
      await writeFile(file, "federation:\n  rules:\n    - hosts: [1]\n");
      const message = configErrorMessage(() => loadConfig({ file, onWarning: () => undefined }));
      assert.match(message, /FERRY_FEDERATION__RULES='\[\.\.\.\]' sets the whole list/);
      assert.doesNotMatch(message, /FERRY_FEDERATION__RULES__0/, "no variable that cannot be set");
      // ...and the hint really works: the same list as one variable is read.
      const config = loadConfig({ env: { FERRY_FEDERATION__RULES: "[{hosts: [cdn.example.com], serve: redirect}]" }, onWarning: () => undefined });
      assert.equal(config.federation.rules.length, 1);
      // A typo inside the variable's value is named as the variable, with the key inside it.
      assert.match(
        configErrorMessage(() => loadConfig({ env: { FERRY_FEDERATION__RULES: "[{hosts: [cdn.example.com], serv: redirect}]" } })),
        /environment variable FERRY_FEDERATION__RULES \(federation\.rules\.0\.serv\): not a known setting; did you mean federation\.rules\.0\.serve\?/,
      );
      await writeFile(file, "federation:\n  rules:\n    - host: cdn.example.com\n");
      assert.match(configErrorMessage(() => loadConfig({ file, onWarning: () => undefined })), /federation\.rules\.0\.host.*did you mean federation\.rules\.0\.hosts\?/);
    }));

  it("a misspelled variable is named as the variable, with the variable it probably meant", () => {
    const warnings: string[] = [];
    loadConfig({ env: { FERRY_LISTNE: "x", FERRY_LOG__LEVLE: "debug" }, onWarning: (w) => warnings.push(w) });
    const text = warnings.join("\n");
    assert.match(text, /environment variable FERRY_LISTNE is not a Ferry setting \(did you mean FERRY_LISTEN\?\); ignored/);
    assert.match(text, /FERRY_LOG__LEVLE .*did you mean FERRY_LOG__LEVEL\?/);
    assert.doesNotMatch(text, /config key/, "a variable is not called a config key");
  });

  it("a bad value names the variable or the flag that carried it, never the other one", () => {
    const fromEnv = configErrorMessage(() => loadConfig({ env: { FERRY_LISTEN: "nowhere" }, flagNames: {} }));
    assert.match(fromEnv, /environment variable FERRY_LISTEN \(listen\): write HOST:PORT/);
    const fromFlag = configErrorMessage(() => loadConfig({ overrides: { listen: "nowhere" }, flagNames: { listen: "--listen" } }));
    assert.match(fromFlag, /flag --listen: write HOST:PORT/);
    const list = configErrorMessage(() => loadConfig({ env: { FERRY_TRUSTED_PROXIES: "10.0.0.1" } }));
    assert.match(list, /FERRY_TRUSTED_PROXIES.*write a YAML list, e\.g\. FERRY_TRUSTED_PROXIES='\[a, b\]'/);
  });

  it("flags: a non-number for --workers names the flag and exits 2", () => {
    const { status, stderr } = serveFails(["--workers", "two"]);
    assert.equal(status, 2);
    assert.match(stderr, /flag --workers: expected a whole number/);
    const port = serveFails(["--listen", "127.0.0.1:99999"]);
    assert.equal(port.status, 2);
    assert.match(port.stderr, /flag --listen: the port must be 0-65535/);
  });
});

describe("the data directory", () => {
  // Root may write anywhere: the check runs as an ordinary user (nobody) when the tests run as root.
  const uid = process.getuid?.() === 0 ? 65534 : undefined;

  it("that cannot be written says so, naming the directory and the user, without a code or a stack", () =>
    withDir(async (dir) => {
      const locked = join(dir, "locked");
      await mkdir(locked, { mode: 0o555 });
      await chmod(locked, 0o555);
      const existing = serveFails(["--data", locked, "--listen", "127.0.0.1:0"], {}, uid);
      assert.equal(existing.status, 1, existing.stderr);
      assert.match(existing.stderr, new RegExp(`data directory ${locked} is not writable by user [^:]+`));
      const missing = serveFails(["--data", join(locked, "data"), "--listen", "127.0.0.1:0"], {}, uid);
      assert.match(missing.stderr, new RegExp(`data directory ${join(locked, "data")} is not writable by user [^:]+: it does not exist`));
      for (const output of [existing.stderr, missing.stderr]) {
        assert.doesNotMatch(output, /EACCES|    at /, "no errno code, no stack trace");
      }
    }));

  it("that is a file says a file is in the way", () =>
    withDir(async (dir) => {
      const file = join(dir, "data");
      await writeFile(file, "");
      const { stderr } = serveFails(["--data", file, "--listen", "127.0.0.1:0"]);
      assert.match(stderr, /data directory .* is not a directory \(a file is in the way\)/);
    }));
});

/** Starts `ferry serve` through a shell, as npm does; returns its output so far once it logs the banner. */
async function startThroughShell(args: string[], env: NodeJS.ProcessEnv) {
  // `; true` keeps the shell as a parent process (a lone command would be exec'd in its place).
  const shell = spawn("sh", ["-c", `"${process.execPath}" "${FERRY}" serve ${args.join(" ")}; true`], {
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  shell.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  shell.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const started = Date.now();
  while (!output.includes("ferry listening on")) {
    if (Date.now() - started > 15_000) throw new Error(`no banner: ${output}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { shell, output: () => output };
}

/** The server process: the one child of the shell (matching by command line would also find the shell). */
function serverPid(shellPid: number | undefined): number | undefined {
  const found = spawnSync("pgrep", ["-P", String(shellPid)], { encoding: "utf8" });
  const pid = Number(found.stdout.trim().split("\n")[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** Stops a server started by startThroughShell and lets go of its output pipes (they would keep the test alive). */
function cleanUp(shell: ReturnType<typeof spawn>, pid: number | undefined): void {
  if (pid && alive(pid)) process.kill(pid, "SIGKILL");
  shell.kill("SIGKILL");
  shell.stdout?.destroy();
  shell.stderr?.destroy();
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("ferry serve start-up", () => {
  it("--listen :PORT listens on every interface; the banner is one JSON log line with the URL, and no human line off a terminal", () =>
    withDir(async (dir) => {
      const port = await freePort();
      const { shell, output } = await startThroughShell(["--listen", `:${port}`, "--data", join(dir, "data")], {});
      const pid = serverPid(shell.pid);
      try {
        const v4 = await fetch(`http://127.0.0.1:${port}/v2/`);
        assert.equal(v4.status, 200);
        const v6 = await fetch(`http://[::1]:${port}/v2/`).catch(() => undefined);
        if (v6) assert.equal(v6.status, 200, "IPv6 loopback too, where the machine has it");
        const banner = output()
          .split("\n")
          .filter((line) => line.includes("ferry listening on"));
        assert.equal(banner.length, 1, output());
        const line = JSON.parse(banner[0]!) as Record<string, unknown>;
        assert.equal(line.url, `http://127.0.0.1:${port}`);
        assert.equal(line.interfaces, "all");
        assert.equal(line.version, VERSION);
        assert.equal(line.storage, "filesystem");
        assert.doesNotMatch(output(), /Stop with Ctrl-C/, "the human summary is for terminals only");
      } finally {
        cleanUp(shell, pid);
      }
    }));

  it("started by npm (npx ferry serve): stopping npm's shell stops the server and frees the port; outside npm it keeps serving", () =>
    withDir(async (dir) => {
      const port = await freePort();
      const { shell } = await startThroughShell(["--listen", `:${port}`, "--data", join(dir, "a")], { npm_command: "exec", npm_lifecycle_event: "npx" });
      const pid = serverPid(shell.pid);
      assert.ok(pid, "server process found");
      try {
        shell.kill("SIGKILL"); // what npm's signal does to the shell; the server never hears it
        const deadline = Date.now() + 5000;
        while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
        assert.ok(!alive(pid), "the server stopped with its parent");
        await assert.rejects(fetch(`http://127.0.0.1:${port}/v2/`), "the port is free again");
      } finally {
        cleanUp(shell, pid);
      }

      // Not under npm: re-parenting (nohup, a shell that exits) is normal and the server stays.
      const port2 = await freePort();
      const second = await startThroughShell(["--listen", `:${port2}`, "--data", join(dir, "b")], {});
      const pid2 = serverPid(second.shell.pid);
      assert.ok(pid2);
      try {
        second.shell.kill("SIGKILL");
        await new Promise((r) => setTimeout(r, 1500));
        assert.ok(alive(pid2), "still serving");
        assert.equal((await fetch(`http://127.0.0.1:${port2}/v2/`)).status, 200);
      } finally {
        cleanUp(second.shell, pid2);
      }
    }));

  it("--version and the banner's version are package.json's", async () => {
    const pkg = JSON.parse(await readFile("package.json", "utf8")) as { version: string };
    assert.equal(VERSION, pkg.version);
  });
});

describe("test tooling", () => {
  it("a skipped e2e test names the Debian package that provides the missing command", () => {
    assert.equal(debianPackageFor("htpasswd"), "apache2-utils");
    assert.equal(debianPackageFor("skopeo"), "skopeo");
  });
});
