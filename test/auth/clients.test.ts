/**
 * Real clients under the policy: skopeo and podman log in through the
 * Bearer challenge and /token, push where the policy allows, are refused
 * where it does not, and pull public repositories without credentials.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { buildImage, writeLayout, type TestImage } from "../helpers/images.js";
import { skipUnless } from "../helpers/tools.js";
import { basic, bcryptHash, pushImageAs } from "./util.js";

const run = promisify(execFile);
const skipSkopeo = skipUnless("skopeo");
const skipPodman = skipUnless("skopeo", "podman");

let registry: TestRegistry;
let image: TestImage;
let layout: string;
let home: string;

before(async () => {
  if (skipSkopeo) return;
  registry = await startTestRegistry({
    auth: {
      users: {
        admin: { passwordHash: bcryptHash("admin-pw") },
        alice: { passwordHash: bcryptHash("alice-pw"), groups: ["team-a"] },
        ci: { passwordHash: bcryptHash("ci-pw") },
      },
      rules: [
        { repositories: ["team-a/**"], groups: ["team-a"], actions: ["*"] },
        { repositories: ["ci/**"], users: ["ci"], actions: ["pull", "push"] },
      ],
      public: ["base/*"],
      admins: { users: ["admin"] },
    },
  });
  image = await buildImage({ layers: [{ "etc/motd": "under the policy\n" }] });
  home = await mkdtemp(join(tmpdir(), "ferry-auth-clients-"));
  layout = join(home, "layout");
  await writeLayout(layout, [{ tag: "v1", image }]);
  await pushImageAs(registry.url, "base/alpine", "3", image, basic("admin", "admin-pw"));
});

after(async () => {
  await registry?.close();
});

interface Result {
  ok: boolean;
  stdout: string;
  stderr: string;
}

/** Runs a client with a private HOME/XDG_RUNTIME_DIR so no auth file of the machine is read or written. */
async function client(tool: string, args: string[], input?: string): Promise<Result> {
  const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: home, XDG_RUNTIME_DIR: join(home, "run"), XDG_CONFIG_HOME: join(home, "config") };
  const child = run(tool, args, { env, maxBuffer: 64 * 1024 * 1024 });
  if (input !== undefined) {
    child.child.stdin?.end(input);
  } else {
    child.child.stdin?.end();
  }
  try {
    const { stdout, stderr } = await child;
    return { ok: true, stdout, stderr };
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; message: string };
    return { ok: false, stdout: e.stdout ?? "", stderr: e.stderr ?? e.message };
  }
}

function authfile(name: string): string {
  return join(home, `${name}-auth.json`);
}

async function must(result: Promise<Result>, what: string): Promise<Result> {
  const r = await result;
  assert.ok(r.ok, `${what}: ${r.stderr}`);
  return r;
}

test("skopeo login: wrong password refused, right one accepted", { skip: skipSkopeo }, async () => {
  const wrong = await client("skopeo", ["login", "--tls-verify=false", "--authfile", authfile("alice"), "-u", "alice", "--password-stdin", registry.host], "nope\n");
  assert.equal(wrong.ok, false);
  assert.match(wrong.stderr, /401|unauthorized|invalid/i);
  const right = await client("skopeo", ["login", "--tls-verify=false", "--authfile", authfile("alice"), "-u", "alice", "--password-stdin", registry.host], "alice-pw\n");
  assert.ok(right.ok, right.stderr);
  assert.match(right.stdout, /Login Succeeded/);
});

test("skopeo copy with the stored login: push where allowed, refused elsewhere", { skip: skipSkopeo }, async () => {
  await must(
    client("skopeo", ["login", "--tls-verify=false", "--authfile", authfile("alice"), "-u", "alice", "--password-stdin", registry.host], "alice-pw\n"),
    "login",
  );
  await must(client("skopeo", ["copy", "--dest-tls-verify=false", "--authfile", authfile("alice"), `oci:${layout}:v1`, `docker://${registry.host}/team-a/app:v1`]), "push to team-a");
  const tags = await fetch(`${registry.url}/v2/team-a/app/tags/list`, { headers: { authorization: basic("alice", "alice-pw") } });
  assert.deepEqual(await tags.json(), { name: "team-a/app", tags: ["v1"] });
  // Registry-to-registry copy inside the team namespace (source pull + destination push, mount).
  await must(
    client("skopeo", ["copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--authfile", authfile("alice"), `docker://${registry.host}/team-a/app:v1`, `docker://${registry.host}/team-a/copy:v1`]),
    "copy within team-a",
  );
  const denied = await client("skopeo", ["copy", "--dest-tls-verify=false", "--authfile", authfile("alice"), `oci:${layout}:v1`, `docker://${registry.host}/other/x:v1`]);
  assert.equal(denied.ok, false);
  assert.match(denied.stderr, /denied|unauthorized|403|401/i);
  const other = await fetch(`${registry.url}/v2/other/x/tags/list`, { headers: { authorization: basic("admin", "admin-pw") } });
  assert.equal(other.status, 404, "nothing was written to other/x");
  await must(client("skopeo", ["delete", "--tls-verify=false", "--authfile", authfile("alice"), `docker://${registry.host}/team-a/copy:v1`]), "delete in team-a");
});

test("a CI robot with --dest-creds may push to its namespace only", { skip: skipSkopeo }, async () => {
  await must(client("skopeo", ["copy", "--dest-tls-verify=false", "--dest-creds", "ci:ci-pw", `oci:${layout}:v1`, `docker://${registry.host}/ci/build:42`]), "ci push");
  const refused = await client("skopeo", ["copy", "--dest-tls-verify=false", "--dest-creds", "ci:ci-pw", `oci:${layout}:v1`, `docker://${registry.host}/team-a/app:evil`]);
  assert.equal(refused.ok, false);
  const tags = await fetch(`${registry.url}/v2/team-a/app/tags/list`, { headers: { authorization: basic("admin", "admin-pw") } });
  assert.ok(!((await tags.json()) as { tags: string[] }).tags.includes("evil"));
});

test("anonymous skopeo pulls public repositories and is refused private ones", { skip: skipSkopeo }, async () => {
  const empty = authfile("nobody");
  await writeFile(empty, "{}");
  const inspected = await must(client("skopeo", ["inspect", "--tls-verify=false", "--authfile", empty, `docker://${registry.host}/base/alpine:3`]), "public inspect");
  assert.equal((JSON.parse(inspected.stdout) as { Digest: string }).Digest, image.manifestDigest);
  await must(client("skopeo", ["copy", "--src-tls-verify=false", "--authfile", empty, `docker://${registry.host}/base/alpine:3`, `oci:${join(home, "pulled")}:x`]), "public copy");
  const refused = await client("skopeo", ["inspect", "--tls-verify=false", "--authfile", empty, `docker://${registry.host}/team-a/app:v1`]);
  assert.equal(refused.ok, false);
  assert.match(refused.stderr, /unauthorized|authentication required|401/i);
});

test("podman login, pull and push under the policy (root, no daemon, vfs storage)", { skip: skipPodman }, async () => {
  const root = await mkdtemp(join(tmpdir(), "ferry-podman-auth-"));
  const podman = (args: string[], input?: string) =>
    client("podman", ["--root", join(root, "storage"), "--runroot", join(root, "run"), "--storage-driver", "vfs", ...args], input);
  const file = authfile("podman");
  const login = await podman(["login", "--tls-verify=false", "--authfile", file, "-u", "alice", "--password-stdin", registry.host], "alice-pw\n");
  assert.ok(login.ok, login.stderr);
  await must(podman(["pull", "--tls-verify=false", "--authfile", file, `${registry.host}/base/alpine:3`]), "podman pull public");
  await must(podman(["tag", `${registry.host}/base/alpine:3`, `${registry.host}/team-a/podman:v1`]), "tag");
  await must(podman(["push", "--tls-verify=false", "--authfile", file, `${registry.host}/team-a/podman:v1`]), "podman push to team-a");
  const tags = await fetch(`${registry.url}/v2/team-a/podman/tags/list`, { headers: { authorization: basic("alice", "alice-pw") } });
  assert.deepEqual(await tags.json(), { name: "team-a/podman", tags: ["v1"] });
  await must(podman(["tag", `${registry.host}/base/alpine:3`, `${registry.host}/base/alpine:hijacked`]), "tag");
  const refused = await podman(["push", "--tls-verify=false", "--authfile", file, `${registry.host}/base/alpine:hijacked`]);
  assert.equal(refused.ok, false, "alice may not push to the public base images");
  assert.match(refused.stderr, /denied|403/i);
  await must(podman(["rmi", "-a", "-f"]), "clean up");
  await must(podman(["pull", "--tls-verify=false", "--authfile", file, `${registry.host}/team-a/podman:v1`]), "podman pull private with login");
});
