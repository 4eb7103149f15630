/**
 * The security review of the session's new surfaces (web UI API, webhooks
 * status, tracing), from a hostile client's or an outsider's point of view.
 * Each test is a finding: it failed before its fix.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { loadConfig } from "../../src/config/load.js";
import { startRegistry } from "../../src/server.js";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { basic, bcryptHash, errorCode, pushBlobAs, putManifestAs } from "../auth/util.js";
import { sha256 } from "../helpers/images.js";
import { SafeFetcher } from "../../src/federation/fetcher.js";
import { UrlPolicy } from "../../src/federation/policy.js";
import { federationConfigSchema } from "../../src/federation/config.js";
import { OtlpReceiver } from "../tracing/otlp-receiver.js";

const ADMIN_PW = "admin-review-pw";
const admin = basic("admin", ADMIN_PW);
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
let registry: TestRegistry;

before(async () => {
  registry = await startTestRegistry({
    auth: { users: { admin: { passwordHash: bcryptHash(ADMIN_PW) } }, rules: [], public: [], admins: { users: ["admin"] } },
  });
});
after(() => registry.close());

test("every authenticated /ferry/v1 JSON answer says Cache-Control: no-store (admin status pages included)", async () => {
  for (const path of ["/ferry/v1/session", "/ferry/v1/repositories", "/ferry/v1/gc", "/ferry/v1/notifications", "/ferry/v1/foreign/sources", "/ferry/v1/foreign/layers"]) {
    for (const method of path === "/ferry/v1/notifications" ? ["GET", "HEAD"] : ["GET"]) {
      const res = await fetch(`${registry.url}${path}`, { method, headers: { authorization: admin } });
      await res.arrayBuffer();
      assert.equal(res.status, 200, `${method} ${path}`);
      assert.match(res.headers.get("cache-control") ?? "", /no-store/, `${method} ${path} may be kept by a browser or proxy cache`);
    }
  }
});

test("a cross-site form POST cannot start garbage collection with a browser's cached Basic credentials", async () => {
  const gc = (headers: Record<string, string>) =>
    fetch(`${registry.url}/ferry/v1/gc`, {
      method: "POST",
      // What a browser sends for <form method=POST action=.../ferry/v1/gc> on another site, Basic credentials attached from its cache.
      headers: { authorization: admin, "content-type": "application/x-www-form-urlencoded", ...headers },
      body: "",
    });
  const host = new URL(registry.url).host;
  for (const headers of <Array<Record<string, string>>>[
    { "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", origin: "https://evil.example" },
    { "sec-fetch-site": "same-site", origin: `http://other.${host}` },
    // A browser without Fetch Metadata: only Origin tells.
    { origin: "https://evil.example" },
    { origin: "null" },
  ]) {
    const res = await gc(headers);
    assert.equal(res.status, 403, JSON.stringify(headers));
    assert.equal(await errorCode(res), "DENIED");
  }
  // Verifying an image's foreign sources (the UI's "verify" button) makes the registry fetch: the same rule.
  const verify = await fetch(`${registry.url}/ferry/v1/foreign/verify?repository=any/repo&reference=latest`, {
    method: "POST",
    headers: { authorization: admin, "sec-fetch-site": "cross-site", origin: "https://evil.example" },
  });
  assert.equal(verify.status, 403);
  assert.equal(await errorCode(verify), "DENIED");
  const state = (await (await fetch(`${registry.url}/ferry/v1/gc`, { headers: { authorization: admin } })).json()) as { last: unknown };
  assert.equal(state.last, null, "no collection ran");
  // The UI (same origin) and non-browser clients (no Origin, no Sec-Fetch-Site) still can.
  for (const headers of <Array<Record<string, string>>>[{ "sec-fetch-site": "same-origin", origin: `http://${host}` }, {}, { origin: `http://${host}` }]) {
    const res = await gc(headers);
    assert.equal(res.status, 200, `${JSON.stringify(headers)}: ${await res.clone().text()}`);
    await res.arrayBuffer();
  }
});

test("a federation fetch refused after DNS does not put a presigned URL's query into the exported span", async (t) => {
  const receiver = await new OtlpReceiver().start();
  const dir = await mkdtemp(join(tmpdir(), "ferry-review-trace-"));
  const config = loadConfig({
    env: {},
    overrides: { listen: "127.0.0.1:0", data: dir, log: { level: "silent", accessLog: false }, tracing: { enabled: true, endpoint: receiver.endpoint } },
  });
  const running = await startRegistry(config, { logger: pino({ level: "silent" }) });
  t.after(async () => {
    await receiver.close();
    await rm(dir, { recursive: true, force: true });
  });
  // A CDN name that (today) resolves to an address a deny rule refuses: the refusal quotes the URL, query and all.
  const policy = new UrlPolicy(federationConfigSchema.parse({ rules: [{ hosts: ["10.1.2.3"], deny: true }] }));
  const fetcher = new SafeFetcher({ schemes: ["https", "http"], allowPrivateNetworks: true, policy, resolve: async () => [{ address: "10.1.2.3", family: 4 }] });
  const url = "http://cdn.example.test/layer?X-Amz-Signature=presigned-secret-sig";
  await assert.rejects(fetcher.fetch({ url, method: "HEAD", timeoutMs: 2000, maxBytes: 0 }), /denied/);
  fetcher.close();
  await running.close(); // flushes the spans
  const refused = receiver.spans.find((s) => s.kind === 3 && (s.status?.message ?? "").includes("denied"));
  assert.ok(refused, `the refused fetch has an error span: ${JSON.stringify(receiver.spans.map((s) => [s.name, s.status]))}`);
  assert.ok(!JSON.stringify(receiver.spans).includes("presigned-secret-sig"), `the signature reached the traces: ${refused.status?.message}`);
  assert.match(refused.status!.message!, /http:\/\/cdn\.example\.test\/layer/, "the URL without its query still says what was refused");
});

test("an index of images with 1 MiB configs cannot make one /ferry/v1/image answer tens of MiB (each config's text is cut at 64 KiB)", async () => {
  const open = await startTestRegistry({});
  try {
    const layer = Buffer.from("layer");
    assert.equal((await pushBlobAs(open.url, "big/app", layer, null)).status, 201);
    const children = [];
    for (let i = 0; i < 16; i++) {
      // Just under the 1 MiB the API reads: 10,000 env entries and 450 history steps of 1.9 KB.
      const config = Buffer.from(
        JSON.stringify({
          architecture: "amd64",
          os: "linux",
          config: { Env: Array.from({ length: 10_000 }, (_, k) => `V${k}=${i}`), Labels: { first: "label" } },
          rootfs: { type: "layers", diff_ids: [] },
          history: Array.from({ length: 450 }, (_, k) => ({ created_by: `${"x".repeat(1900)}${i}-${k}` })),
        }),
      );
      assert.ok(config.length < 1024 * 1024);
      assert.equal((await pushBlobAs(open.url, "big/app", config, null)).status, 201);
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
          layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha256(layer), size: layer.length }],
        }),
      );
      assert.equal((await putManifestAs(open.url, "big/app", sha256(manifest), OCI_MANIFEST, manifest, null)).status, 201);
      children.push({ mediaType: OCI_MANIFEST, digest: sha256(manifest), size: manifest.length, platform: { os: "linux", architecture: "amd64" } });
    }
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: children }));
    assert.equal((await putManifestAs(open.url, "big/app", "multi", OCI_INDEX, index, null)).status, 201);

    const res = await fetch(`${open.url}/ferry/v1/image?repository=big/app&reference=multi`);
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(res.status, 200);
    assert.ok(body.length < 16 * 128 * 1024, `one answer is ${(body.length / 1048576).toFixed(1)} MiB`);
    const view = JSON.parse(body.toString("utf8")) as { children: Array<{ image?: { config?: { os?: string; env?: string[]; labels?: Record<string, string>; truncated?: boolean } } }> };
    const config = view.children[0]!.image!.config!;
    assert.equal(config.os, "linux");
    assert.equal(config.truncated, true, "the answer says it was cut");
    assert.deepEqual(config.env!.slice(0, 2), ["V0=0", "V1=0"], "what fits is shown, in order");
    // The tag listing still finds every platform from the same configs.
    const listing = (await (await fetch(`${open.url}/ferry/v1/repository?name=big/app`)).json()) as { tags: Array<{ tag: string; platforms: string[] }> };
    assert.deepEqual(listing.tags.find((t) => t.tag === "multi")!.platforms, ["linux/amd64"]);
  } finally {
    await open.close();
  }
});

test("hundreds of tags on one 4 MiB manifest cost one copy of it, not one per tag, in the tag listing and the image view", async () => {
  const open = await startTestRegistry({});
  try {
    const config = Buffer.from("{}");
    assert.equal((await pushBlobAs(open.url, "big/tags", config, null)).status, 201);
    // Just under the default manifests.maxBytes (4 MiB); ten ?tag= pushes name it 300 times.
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: 2 },
        layers: [],
        annotations: { pad: "x".repeat(4 * 1024 * 1024 - 400) },
      }),
    );
    for (let batch = 0; batch < 3; batch++) {
      const tags = Array.from({ length: 100 }, (_, i) => `tag=t${batch}-${String(i).padStart(2, "0")}`).join("&");
      const put = await fetch(`${open.url}/v2/big/tags/manifests/${sha256(manifest)}?${tags}`, { method: "PUT", body: new Uint8Array(manifest), headers: { "content-type": OCI_MANIFEST } });
      assert.equal(put.status, 201, await put.text());
    }
    const used = () => process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    const before = used();
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, used())), 2);
    try {
      const listing = await fetch(`${open.url}/ferry/v1/repository?name=big/tags`);
      const view = (await listing.json()) as { tags: Array<{ tag: string; kind: string; size: number }> };
      assert.equal(listing.status, 200);
      assert.equal(view.tags.length, 300);
      assert.ok(view.tags.every((t) => t.kind === "image" && t.size === manifest.length + 2));
      const image = await fetch(`${open.url}/ferry/v1/image?repository=big/tags&reference=t0-00`);
      assert.equal(((await image.json()) as { tags: string[] }).tags.length, 300);
    } finally {
      clearInterval(sampler);
    }
    // Before: ~1.3 GB for one listing (every row a copy of the 4 MiB manifest).
    assert.ok(peak - before < 300e6, `one listing took ${((peak - before) / 1e6).toFixed(0)} MB`);
  } finally {
    await open.close();
  }
});
