/**
 * The UI's repository list at 10,000 repositories, through the API with an
 * access policy: the page a caller sees must stay fast however few of the
 * repositories they may see (the filter runs over every name), and the
 * counts must be right. Times are printed.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { basic, bcryptHash } from "../auth/util.js";
import { buildImage, type TestImage } from "../helpers/images.js";
import { seedRepositories } from "./seed.js";

const COUNT = 10_000;
const AUTH = {
  users: { admin: { passwordHash: bcryptHash("a") }, alice: { passwordHash: bcryptHash("b") } },
  // alice may pull one repository in a hundred: team-a/r00000, team-a/r00100, ...
  rules: [{ repositories: ["team-a/r??000", "team-a/r??100", "team-a/r??200", "team-a/r??300", "team-a/r??400", "team-a/r??500", "team-a/r??600", "team-a/r??700", "team-a/r??800", "team-a/r??900"], users: ["alice"], actions: ["pull"] }],
  admins: { users: ["admin"] },
};

let registry: TestRegistry;
let image: TestImage;

before(async () => {
  registry = await startTestRegistry({ auth: AUTH });
  image = await buildImage();
  seedRepositories(registry.dataDir, Array.from({ length: COUNT }, (_, i) => `team-a/r${String(i).padStart(5, "0")}`), image);
});
after(() => registry.close());

async function timed(path: string, authorization: string): Promise<{ ms: number; body: { repositories: Array<{ name: string }>; total: number; next?: string } }> {
  const started = performance.now();
  const response = await fetch(`${registry.url}${path}`, { headers: { authorization } });
  const body = (await response.json()) as { repositories: Array<{ name: string }>; total: number; next?: string };
  assert.equal(response.status, 200);
  return { ms: performance.now() - started, body };
}

test(`${COUNT} repositories: first page, a late page, a search, and a caller who may see 1 in 100`, async () => {
  const admin = basic("admin", "a");
  const alice = basic("alice", "b");
  // Basic credentials cost a bcrypt check per request; the UI uses tokens. Warm the password cache first.
  await timed("/ferry/v1/repositories?n=1", admin);
  await timed("/ferry/v1/repositories?n=1", alice);
  const cases: Array<[string, string, string, number, string]> = [
    ["admin, first page", "/ferry/v1/repositories", admin, COUNT, "team-a/r00000"],
    ["admin, page after r09000", "/ferry/v1/repositories?last=team-a/r09000", admin, COUNT, "team-a/r09001"],
    ["admin, search r099", "/ferry/v1/repositories?q=r099", admin, 100, "team-a/r09900"],
    ["alice, first page", "/ferry/v1/repositories", alice, COUNT / 100, "team-a/r00000"],
    ["alice, second page", "/ferry/v1/repositories?last=team-a/r04900", alice, COUNT / 100, "team-a/r05000"],
  ];
  // The seeded rows are what a push writes: the registry serves them.
  const pulled = await fetch(`${registry.url}/v2/team-a/r04242/manifests/latest`, { headers: { authorization: admin, accept: image.mediaType } });
  assert.equal(pulled.status, 200);
  assert.deepEqual(Buffer.from(await pulled.arrayBuffer()), image.manifest);
  for (const [label, path, who, total, first] of cases) {
    const { ms, body } = await timed(path, who);
    console.log(`# ui api, ${COUNT} repositories, ${label}: ${ms.toFixed(1)} ms`);
    assert.equal(body.total, total, label);
    assert.equal(body.repositories[0]?.name, first, label);
    assert.ok(ms < 1000, `${label}: ${ms.toFixed(0)} ms`);
  }
});
