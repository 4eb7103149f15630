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
import { basic, bcryptHash, errorCode } from "../auth/util.js";
import { SafeFetcher } from "../../src/federation/fetcher.js";
import { UrlPolicy } from "../../src/federation/policy.js";
import { federationConfigSchema } from "../../src/federation/config.js";
import { OtlpReceiver } from "../tracing/otlp-receiver.js";

const ADMIN_PW = "admin-review-pw";
const admin = basic("admin", ADMIN_PW);
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
