/**
 * An attacker who may push (any team member, a compromised CI job) writes
 * script into everything the web UI renders from an image: config labels,
 * env, cmd, entrypoint, user, working dir, history, manifest annotations, the
 * raw manifest, a referrer's annotations. A viewer (an admin, whose bearer
 * token lives in the page's sessionStorage) opens the repository and the
 * image in Debian's chromium: nothing may run, every payload must show as
 * text. Also: a crafted link (#/i/...%) must not break the page.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import type { Browser, Page } from "playwright-core";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { tarGz } from "../helpers/images.js";
import { basic, bcryptHash, pushBlobAs, putManifestAs } from "../auth/util.js";
import { skipUnless } from "../helpers/tools.js";

const skip = skipUnless("chromium");
const PW = "admin-hostile-pw";
const admin = basic("admin", PW);
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";

/** Each sets window.__xss when it runs; `javascript:` ones only when a viewer clicks a link made of them. */
const PAYLOADS = [
  `<img src=x onerror="window.__xss='img'">`,
  `<script>window.__xss='script'</script>`,
  `"><svg onload="window.__xss='svg'">`,
  `javascript:window.__xss='href'`,
  `{{constructor.constructor('window.__xss="tpl"')()}}`,
];
const P = (i: number) => PAYLOADS[i % PAYLOADS.length]!;

let registry: TestRegistry;
let browser: Browser;
let digest: string;

const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

before(async () => {
  if (skip) return;
  registry = await startTestRegistry({
    auth: { users: { admin: { passwordHash: bcryptHash(PW) } }, rules: [], public: ["evil/*"], admins: { users: ["admin"] } },
  });
  const { gz, diffId } = await tarGz({ [P(0)]: P(1) });
  const config = Buffer.from(
    JSON.stringify({
      architecture: P(2),
      os: "linux",
      created: P(3),
      config: {
        Labels: Object.fromEntries(PAYLOADS.map((p, i) => [`l${i}${p}`, p])),
        Env: PAYLOADS.map((p) => `X=${p}`),
        Cmd: PAYLOADS,
        Entrypoint: [P(0)],
        User: P(1),
        WorkingDir: P(2),
      },
      rootfs: { type: "layers", diff_ids: [diffId] },
      history: PAYLOADS.map((p) => ({ created_by: p, comment: p })),
    }),
  );
  for (const blob of [config, gz]) assert.equal((await pushBlobAs(registry.url, "evil/app", blob, admin)).status, 201);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha256(gz), size: gz.length, annotations: { [P(0)]: P(1) } }],
      annotations: Object.fromEntries(PAYLOADS.map((p, i) => [`org.opencontainers.image.a${i}`, p])),
    }),
  );
  const put = await putManifestAs(registry.url, "evil/app", "latest", OCI_MANIFEST, manifest, admin);
  assert.equal(put.status, 201, await put.text());
  digest = sha256(manifest);
  // A referrer (a "signature") whose annotations carry the payloads too.
  const empty = Buffer.from("{}");
  assert.equal((await pushBlobAs(registry.url, "evil/app", empty, admin)).status, 201);
  const referrer = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: "application/vnd.example.sig",
      config: { mediaType: "application/vnd.oci.empty.v1+json", digest: sha256(empty), size: 2 },
      layers: [{ mediaType: "application/vnd.oci.empty.v1+json", digest: sha256(empty), size: 2 }],
      subject: { mediaType: OCI_MANIFEST, digest, size: manifest.length },
      annotations: Object.fromEntries(PAYLOADS.map((p, i) => [`r${i}`, p])),
    }),
  );
  assert.equal((await putManifestAs(registry.url, "evil/app", sha256(referrer), OCI_MANIFEST, referrer, admin)).status, 201);
  const { chromium } = await import("playwright-core");
  browser = await chromium.launch({
    executablePath: spawnSync("sh", ["-c", "command -v chromium"], { encoding: "utf8" }).stdout.trim(),
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  await registry?.close();
});

async function signedInPage(): Promise<{ page: Page; problems: string[] }> {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  const problems: string[] = [];
  page.on("dialog", (d) => {
    problems.push(`dialog: ${d.message()}`);
    void d.dismiss();
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  await page.goto(`${registry.url}/ui/`);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByLabel("User").fill("admin");
  await page.getByLabel("Password").fill(PW);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("Signed in as admin").waitFor();
  return { page, problems };
}

test("script in an image's config, annotations, history and referrers is shown as text and never runs", { skip }, async () => {
  const { page, problems } = await signedInPage();
  await page.goto(`${registry.url}/ui/#/r/evil/app`);
  await page.getByRole("link", { name: "latest" }).waitFor();
  await page.getByRole("link", { name: "latest" }).click();
  await page.getByText("History").first().waitFor();
  // Open every <details> so everything is rendered, then click every link the page made (a javascript: href would run).
  await page.evaluate("document.querySelectorAll('details').forEach((d) => { d.open = true; })");
  await page.waitForTimeout(300);
  const hrefs = await page.locator("a[href]").evaluateAll((links) => links.map((a) => a.getAttribute("href") ?? ""));
  assert.ok(hrefs.every((h) => !/^\s*javascript:/i.test(h)), `a link made of pushed text: ${hrefs.join(" ")}`);
  const text = await page.locator("body").innerText();
  for (const payload of [PAYLOADS[1]!, PAYLOADS[3]!]) assert.ok(text.includes(payload), `${payload} is shown as text`);
  assert.equal(await page.locator("script:not([src]), img[src=x], svg[onload]").count(), 0, "no element came from pushed text");
  assert.equal(await page.evaluate("window.__xss ?? null"), null, "pushed script ran");
  assert.deepEqual(problems, []);
});

test("a crafted link with a broken escape (#/r/%) does not break the page", { skip }, async () => {
  const { page, problems } = await signedInPage();
  for (const hash of ["#/r/%", "#/i/evil/app@%E0%A4%A", "#/r/evil%2fapp%00"]) {
    // Followed from the page (hashchange) and opened fresh (a reload, as from a link in a mail).
    await page.goto(`${registry.url}/ui/#/`);
    await page.goto(`${registry.url}/ui/${hash}`);
    await page.waitForTimeout(200);
    await page.reload();
    await page.getByText("Signed in as admin").waitFor({ timeout: 5000 });
    // The page still works: back to the list, which shows the repository.
    await page.goto(`${registry.url}/ui/#/`);
    await page.getByRole("link", { name: "evil/app" }).waitFor({ timeout: 5000 });
  }
  assert.deepEqual(problems, []);
});
