/**
 * Issue 14, "wrong today": what a new user trips over. Unknown transports and
 * malformed hosts are usage errors (exit 2), `docker://` works in every
 * command, failures say what happened and what to do (exit 3 not found,
 * 4 auth), the registry's Warning headers are shown, `--json` has an error
 * event, `--platform` never substitutes another platform, `--include-foreign`
 * reports no spurious ENOENT, `login` prompts on a terminal and warns about -p,
 * and Ctrl-C gives the terminal back.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { buildImage, sha256, writeLayout, type TestImage } from "../helpers/images.js";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { hasTool } from "../helpers/tools.js";
import { bcryptHash } from "../auth/util.js";
import { UsageError } from "../../src/client/errors.js";
import { parseLocation } from "../../src/client/location.js";
import { ferry, startForeignServer, tempDir, type ForeignServer } from "./harness.js";

const CLI = join(process.cwd(), "dist", "src", "cli", "main.js");

/** A server that records every request and answers like a web server, not a registry. */
async function startWebServer(): Promise<{ host: string; requests: string[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    req.resume();
    res.writeHead(req.method === "GET" ? 404 : 200, { "content-type": "text/html" }).end("<html>not found</html>");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe("locations", () => {
  test("unknown transports are usage errors listing the supported ones, never host names", async () => {
    const work = await tempDir();
    const image = await buildImage();
    await writeLayout(join(work, "src"), [{ tag: "v1", image }]);
    for (const destination of ["dir:/tmp/x", "oci-archiv:/tmp/x", "ocı:/tmp/x", "docker:/tmp/x", "containers-storage:app"]) {
      const result = await ferry(["copy", `oci:${join(work, "src")}:v1`, destination]);
      assert.equal(result.code, 2, `${destination}: ${result.stderr}`);
      assert.match(result.stderr, /unknown transport|two slashes|not a valid registry host name/, destination);
    }
    const dir = await ferry(["copy", `oci:${join(work, "src")}:v1`, "dir:/tmp/x"]);
    assert.match(dir.stderr, /unknown transport "dir:".*supported: docker:\/\/HOST\/REPO.*oci:DIR.*oci-archive:FILE.*docker-archive:FILE/);
    assert.throws(() => parseLocation("dir:/tmp/x"), UsageError);
    assert.throws(() => parseLocation("oci2:/x"), UsageError);
    // What must stay registry references: host:port/repo, localhost:port/repo, a port-less host.
    assert.deepEqual(parseLocation("localhost:5000/a/b:v1"), { kind: "registry", ref: { registry: "localhost:5000", repository: "a/b", tag: "v1" } });
    assert.deepEqual(parseLocation("registry:5000/a"), { kind: "registry", ref: { registry: "registry:5000", repository: "a" } });
    assert.deepEqual(parseLocation("oci-archive:/tmp/a.tar:v2"), { kind: "oci-archive", file: "/tmp/a.tar", tag: "v2" });
  });

  test("an empty or non-numeric port is named, not turned into port 80 or 'Invalid URL'", async () => {
    const empty = await ferry(["tags", "127.0.0.1:/fc/app"]);
    assert.equal(empty.code, 2, empty.stderr);
    assert.match(empty.stderr, /"127\.0\.0\.1:\/fc\/app": the registry host "127\.0\.0\.1:" has an empty port/);
    const letters = await ferry(["pull", "127.0.0.1:5000fc/app", "oci:/tmp/never"]);
    assert.equal(letters.code, 2, letters.stderr);
    assert.match(letters.stderr, /the port "5000fc" of the registry host is not a number/);
    assert.doesNotMatch(letters.stderr, /Invalid URL/);
    const range = await ferry(["tags", "127.0.0.1:70000/app"]);
    assert.equal(range.code, 2);
    assert.match(range.stderr, /port 70000 is out of range/);
  });
});

describe("exit codes", () => {
  test("command-line mistakes exit 2; help and --version exit 0", async () => {
    assert.equal((await ferry(["tags"])).code, 2, "missing argument");
    assert.equal((await ferry(["push", "--bogus", "oci:/x", "127.0.0.1:1/a"])).code, 2, "unknown option");
    assert.equal((await ferry(["nope"])).code, 2, "unknown command");
    assert.equal((await ferry(["pull", "-j", "0", "127.0.0.1:1/a", "oci:/tmp/x"])).code, 2, "bad --jobs");
    assert.equal((await ferry(["pull", "--platform", "linux", "127.0.0.1:1/a", "oci:/tmp/x"])).code, 2, "bad --platform");
    const version = await ferry(["--version"]);
    assert.equal(version.code, 0);
    assert.equal(version.stdout.trim(), "0.1.0");
    assert.equal((await ferry(["tags", "--help"])).code, 0);
  });
});

describe("against a Ferry registry without access control", () => {
  let registry: TestRegistry;
  let work: string;
  let image: TestImage;

  before(async () => {
    registry = await startTestRegistry();
    work = await tempDir();
    image = await buildImage({ layers: [{ "a.txt": "docker:// everywhere\n" }] });
    await writeLayout(join(work, "src"), [{ tag: "v1", image }]);
  });
  after(() => registry.close());

  test("docker:// is accepted by every command that takes a registry reference", async () => {
    const ref = `docker://${registry.host}/dock/app`;
    const push = await ferry(["push", "-q", `oci:${join(work, "src")}:v1`, `${ref}:v1`]);
    assert.equal(push.code, 0, push.stderr);
    const pull = await ferry(["pull", "-q", `${ref}:v1`, `oci:${join(work, "pulled")}:v1`]);
    assert.equal(pull.code, 0, pull.stderr);
    for (const args of [["tags", ref], ["inspect", `${ref}:v1`], ["digest", `${ref}:v1`], ["manifest", `${ref}:v1`], ["config", `${ref}:v1`], ["referrers", `${ref}:v1`], ["tag", `${ref}:v1`, "v2"], ["untag", `${ref}:v2`], ["catalog", `docker://${registry.host}`], ["foreign", "check", `${ref}:v1`]]) {
      const result = await ferry(args);
      assert.equal(result.code, 0, `${args.join(" ")}: ${result.stderr}`);
    }
    assert.equal((await ferry(["digest", `${ref}:v1`])).stdout.trim(), image.manifestDigest);
    const rm = await ferry(["rm", `${ref}:v1`]);
    assert.equal(rm.code, 0, rm.stderr);
  });

  test("--json failures end with an error event; a missing image exits 3", async () => {
    const result = await ferry(["pull", "--json", `${registry.host}/dock/none:v9`, `oci:${join(work, "none")}`]);
    assert.equal(result.code, 3, result.stderr);
    const last = JSON.parse(result.stdout.trim().split("\n").at(-1)!) as { type: string; exitCode: number; message: string; code?: string };
    assert.equal(last.type, "error");
    assert.equal(last.exitCode, 3);
    assert.match(last.message, /not found/);
  });

  test("--platform for a platform a single image lacks fails (exit 3) instead of pulling another one", async () => {
    assert.equal((await ferry(["push", "-q", `oci:${join(work, "src")}:v1`, `${registry.host}/plat/app:v1`])).code, 0);
    const out = join(work, "arm");
    const wrong = await ferry(["pull", "--platform", "linux/arm64", `${registry.host}/plat/app:v1`, `oci:${out}`]);
    assert.equal(wrong.code, 3, wrong.stderr);
    assert.match(wrong.stderr, /the image is linux\/amd64, not linux\/arm64/);
    await assert.rejects(stat(join(out, "index.json")), "nothing was written");
    const right = await ferry(["pull", "-q", "--platform", "linux/amd64", `${registry.host}/plat/app:v1`, `oci:${out}`]);
    assert.equal(right.code, 0, right.stderr);
  });

  test("the client checks GET /v2/ before pushing: a web server that is not a registry receives no upload", async () => {
    const web = await startWebServer();
    try {
      const push = await ferry(["push", `oci:${join(work, "src")}:v1`, `${web.host}/app:v1`]);
      assert.equal(push.code, 1, push.stderr);
      assert.match(push.stderr, /127\.0\.0\.1:\d+ does not look like an OCI registry: GET http:\/\/127\.0\.0\.1:\d+\/v2\/ answered HTTP 404 \(text\/html\)/);
      assert.deepEqual(web.requests, ["GET /v2/"], "nothing but the check reached the server");
    } finally {
      await web.close();
    }
  });

  test("HTTPS to a plain-HTTP registry says so and suggests --insecure (no OpenSSL wording)", async () => {
    const result = await ferry(["tags", "--tls-verify=false", `${registry.host}/dock/app`]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /127\.0\.0\.1:\d+ answered plain HTTP to an HTTPS request: use --insecure if you trust this network/);
    assert.doesNotMatch(result.stderr, /SSL|ssl3|record/);
  });

  test("a connection refused is explained", async () => {
    const web = await startWebServer();
    const host = web.host;
    await web.close();
    const result = await ferry(["tags", `${host}/x`]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /cannot connect to 127\.0\.0\.1:\d+: connection refused/);
  });
});

describe("against a Ferry registry with users and rules", () => {
  let registry: TestRegistry;
  let work: string;

  before(async () => {
    registry = await startTestRegistry({
      auth: {
        users: {
          alice: { passwordHash: bcryptHash("alice-pw"), groups: ["team-a"] },
          "ci-robot": { passwordHash: bcryptHash("robot-pw") },
        },
        rules: [
          { repositories: ["team-a/**"], groups: ["team-a"], actions: ["*"] },
          { repositories: ["team-a/**"], users: ["ci-robot"], actions: ["pull"] },
        ],
      },
    });
    work = await tempDir();
    await writeLayout(join(work, "src"), [{ tag: "v1", image: await buildImage() }]);
    const push = await ferry(["push", "-q", "--creds", "alice:alice-pw", `oci:${join(work, "src")}:v1`, `${registry.host}/team-a/app:v1`]);
    assert.equal(push.code, 0, push.stderr);
  });
  after(() => registry.close());

  test("anonymous access to a private repository: authentication required, run ferry login (exit 4)", async () => {
    const result = await ferry(["tags", `${registry.host}/team-a/app`]);
    assert.equal(result.code, 4, result.stderr);
    assert.match(result.stderr, /^ferry: authentication required to pull from team-a\/app on 127\.0\.0\.1:\d+: run `ferry login 127\.0\.0\.1:\d+`/);
  });

  test("a stale stored password is named as such, not printed as the token endpoint's JSON", async () => {
    const dockerConfig = join(work, "stale");
    await mkdir(dockerConfig, { recursive: true });
    await writeFile(join(dockerConfig, "config.json"), JSON.stringify({ auths: { [registry.host]: { auth: Buffer.from("alice:old-password").toString("base64") } } }));
    const result = await ferry(["tags", `${registry.host}/team-a/app`], { dockerConfig });
    assert.equal(result.code, 4, result.stderr);
    assert.match(result.stderr, /^ferry: 127\.0\.0\.1:\d+ refused the password of user alice \(changed or expired\?\): run `ferry login 127\.0\.0\.1:\d+` again/);
    assert.doesNotMatch(result.stderr.split("\n")[0]!, /\{|token request/);
  });

  test("a push without rights names the user, the action and the repository", async () => {
    const result = await ferry(["push", "-q", "--creds", "ci-robot:robot-pw", `oci:${join(work, "src")}:v1`, `${registry.host}/team-a/app:v2`]);
    assert.equal(result.code, 4, result.stderr);
    assert.match(result.stderr, /^ferry: user ci-robot may not push to team-a\/app on 127\.0\.0\.1:\d+/);
    assert.doesNotMatch(result.stderr.split("\n")[0]!, /HEAD|HTTP 403/);
    // The same user may pull: --creds works for reads too.
    const tags = await ferry(["tags", "--creds", "ci-robot:robot-pw", `${registry.host}/team-a/app`]);
    assert.equal(tags.code, 0, tags.stderr);
    assert.equal(tags.stdout.trim(), "v1");
  });
});

describe("the registry's Warning headers", () => {
  let registry: TestRegistry;
  let foreign: ForeignServer;
  let work: string;

  before(async () => {
    registry = await startTestRegistry({ federation: { privateRepositoryPatterns: ["private/**"] } });
    foreign = await startForeignServer();
    work = await tempDir();
  });
  after(async () => {
    await registry.close();
    await foreign.close();
  });

  test("federation's warn mode reaches the user: on stderr, and as a JSON event with --json", async () => {
    const base = await buildImage({ foreign: [{ files: { "f.bin": randomBytes(2000) }, urls: [] }] });
    const url = foreign.add("w", base.layers[1]!.bytes);
    const manifest = JSON.parse(base.manifest.toString()) as { layers: Array<{ urls?: string[] }> };
    manifest.layers[1]!.urls = [url];
    const bytes = Buffer.from(JSON.stringify(manifest));
    const image = { ...base, manifest: bytes, manifestDigest: sha256(bytes), layers: [base.layers[0]!, { ...base.layers[1]!, urls: [url] }] };
    await writeLayout(join(work, "src"), [{ tag: "v1", image }]);
    const push = await ferry(["push", `oci:${join(work, "src")}:v1`, `${registry.host}/private/app:v1`]);
    assert.equal(push.code, 0, push.stderr);
    assert.match(push.stderr, /warning from 127\.0\.0\.1:\d+: repository private\/app is private, but foreign layers are public by nature/);
    const json = await ferry(["push", "--json", `oci:${join(work, "src")}:v1`, `${registry.host}/private/app:v2`]);
    assert.equal(json.code, 0, json.stderr);
    const events = json.stdout.trim().split("\n").map((line) => JSON.parse(line) as { type: string; message?: string });
    assert.ok(events.some((e) => e.type === "warning" && /is private/.test(e.message ?? "")), json.stdout);
  });

  test("--include-foreign from a layout without the foreign bytes reports no spurious ENOENT", async () => {
    const base = await buildImage({ foreign: [{ files: { "g.bin": randomBytes(3000) }, urls: [] }] });
    const url = foreign.add("inc", base.layers[1]!.bytes);
    const manifest = JSON.parse(base.manifest.toString()) as { layers: Array<{ urls?: string[] }> };
    manifest.layers[1]!.urls = [url];
    const bytes = Buffer.from(JSON.stringify(manifest));
    const image = { ...base, manifest: bytes, manifestDigest: sha256(bytes), layers: [base.layers[0]!, { ...base.layers[1]!, urls: [url] }] };
    await writeLayout(join(work, "inc"), [{ tag: "v1", image }]);
    const push = await ferry(["push", "--include-foreign", `oci:${join(work, "inc")}:v1`, `${registry.host}/public/inc:v1`]);
    assert.equal(push.code, 0, push.stderr);
    assert.doesNotMatch(push.stderr, /ENOENT|source failed/);
    assert.match(push.stderr, /--include-foreign uploaded foreign layers/);
  });
});

describe("login", () => {
  let registry: TestRegistry;
  before(async () => {
    registry = await startTestRegistry({ auth: { users: { alice: { passwordHash: bcryptHash("alice-pw") } }, rules: [] } });
  });
  after(() => registry.close());

  test("-p works but warns that the password is visible", async () => {
    const dockerConfig = await tempDir();
    const result = await ferry(["login", "-u", "alice", "-p", "alice-pw", registry.host], { dockerConfig });
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /WARNING! --password on the command line is visible to other users.*--password-stdin/);
    const quiet = await ferry(["login", "-u", "alice", "--password-stdin", registry.host], { dockerConfig, stdin: "alice-pw\n" });
    assert.doesNotMatch(quiet.stderr, /WARNING/);
  });

  test("without a terminal and without a password, login says how to give one (exit 2)", async () => {
    const result = await ferry(["login", "-u", "alice", registry.host], { dockerConfig: await tempDir() });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /--password-stdin/);
  });

  test("on a terminal, login asks for the user name and the password (not echoed)", { skip: hasTool("script") ? false : "needs script(1)" }, async () => {
    const dockerConfig = await tempDir();
    const output = await onTerminal(`${process.execPath} ${CLI} login ${registry.host}`, dockerConfig, async (child, seen) => {
      await seen(/Username: /);
      child.stdin!.write("alice\r");
      await seen(/Password: /);
      child.stdin!.write("alice-pw\r");
      await seen(/Login Succeeded/);
    });
    assert.doesNotMatch(output, /alice-pw/, "the password is not echoed");
    const config = JSON.parse(await readFile(join(dockerConfig, "config.json"), "utf8")) as { auths: Record<string, { auth: string }> };
    assert.equal(Buffer.from(config.auths[registry.host]!.auth, "base64").toString(), "alice:alice-pw");
  });
});

describe("Ctrl-C during progress bars", { skip: hasTool("script") ? false : "needs script(1)" }, () => {
  test("gives back the cursor and line wrap, and exits 130", async () => {
    // A registry whose blob upload never completes, so the bars stay up.
    const server: Server = createServer((req: IncomingMessage, res) => {
      const url = req.url ?? "";
      if (url === "/v2/") return void res.writeHead(200, { "content-type": "application/json", "docker-distribution-api-version": "registry/2.0" }).end("{}");
      if (req.method === "HEAD") return void res.writeHead(404).end();
      if (req.method === "POST") return void res.writeHead(202, { location: "/v2/slow/app/blobs/uploads/1" }).end();
      // PUT/PATCH: read a little, then stall.
      req.once("data", () => req.pause());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const work = await tempDir();
      await writeLayout(join(work, "src"), [{ tag: "v1", image: await buildImage({ layers: [{ "big.bin": randomBytes(6 * 1024 * 1024) }] }) }]);
      let code: number | null = null;
      const output = await onTerminal(`${process.execPath} ${CLI} push oci:${join(work, "src")}:v1 ${host}/slow/app:v1`, await tempDir(), async (child, seen) => {
        await seen(/\x1b\[\?25l/);
        await seen(/\|/);
        child.stdin!.write("\x03");
        code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
      });
      const hidden = output.lastIndexOf("\x1b[?25l");
      assert.ok(hidden >= 0, "the bars hid the cursor");
      assert.ok(output.indexOf("\x1b[?25h", hidden) > hidden, "the cursor is shown again");
      assert.ok(output.lastIndexOf("\x1b[?7h") > output.lastIndexOf("\x1b[?7l"), "line wrap is turned back on");
      assert.equal(code, 130);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

/**
 * Runs a command on a pseudo-terminal (script(1)), lets `drive` type into it,
 * and returns everything the terminal showed.
 */
async function onTerminal(
  command: string,
  dockerConfig: string,
  drive: (child: ReturnType<typeof spawn>, seen: (pattern: RegExp) => Promise<void>) => Promise<void>,
): Promise<string> {
  const child = spawn("script", ["-qefc", command, "/dev/null"], { env: { ...process.env, DOCKER_CONFIG: dockerConfig, TERM: "xterm" }, stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  const waiters: Array<() => void> = [];
  const onData = (chunk: Buffer) => {
    output += chunk.toString("utf8");
    for (const wake of waiters.splice(0)) wake();
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const seen = async (pattern: RegExp) => {
    const deadline = Date.now() + 15_000;
    while (!pattern.test(output)) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`terminal never showed ${pattern}; it showed: ${JSON.stringify(output)}`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  };
  try {
    await drive(child, seen);
    // An unref'd timer: it must not hold the test process open once the command exited.
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000).unref())]);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
  }
  return output;
}
