/**
 * A response must never contradict what was committed (hardening issue,
 * defect 7): with `verify.onFailure: warn`, a foreign URL holding characters
 * above U+00FF went into the `Warning` header, Node refused the header, and
 * the client got 500 for a manifest that had been stored. Header values made
 * from data are now encoded (percent-encoded UTF-8). (The URL policy may now
 * refuse such raw URLs at push; the guard in send() covers every header.)
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestRegistry } from "../helpers/registry.js";
import { blob, pushForeignImage } from "../federation/helpers.js";
import { formatWarning } from "../../src/http/handlers/manifests.js";
import { safeHeaders, send } from "../../src/http/respond.js";
import { loadConfig } from "../../src/config/load.js";
import { startRegistry } from "../../src/server.js";
import { rm } from "node:fs/promises";

test("a foreign URL with an emoji: the answer matches what was stored, never a 500", async (t) => {
  const r = await startTestRegistry({
    federation: { proxy: { allowPrivateNetworks: true }, verify: { mode: "fetch", onFailure: "warn", timeout: "1s" } },
  });
  t.after(() => r.close());
  const layer = blob(100);
  // Nothing listens on port 9 of loopback: the check fails and warn mode accepts the layer with a Warning
  // (unless the URL policy refuses the raw characters outright, which is just as consistent).
  const url = "http://127.0.0.1:9/layer-😀-é.tar";
  const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [url] }]);
  assert.ok(pushed.status < 500, `${pushed.status} ${pushed.body}`);
  const get = await fetch(`${r.url}/v2/app/manifests/v1`, { headers: { Accept: "application/vnd.oci.image.manifest.v1+json" } });
  if (pushed.status === 201) {
    const warning = pushed.headers.get("warning") ?? "";
    assert.match(warning, /^299 - "[\x20-\x7e]*"$/, `Warning is visible ASCII: ${warning}`);
    assert.ok(warning.includes("layer-%F0%9F%98%80-%C3%A9.tar"), warning);
    assert.equal(get.status, 200);
    assert.deepEqual(Buffer.from(await get.arrayBuffer()), pushed.manifest);
  } else {
    assert.equal(get.status, 404, "refused, so not stored");
    await get.arrayBuffer();
  }
});

test("any header made from data is sent encoded instead of failing the response", async (t) => {
  const r = await startTestRegistry({});
  t.after(() => r.close());
  // An endpoint whose answer carries data no header may hold as is, sent the way handlers send.
  const running = await startRegistry(
    loadConfig({ env: {}, overrides: { listen: "127.0.0.1:0", data: r.dataDir + "-x", log: { level: "silent", accessLog: false } } }),
    {
      extensions: [
        {
          method: "PUT",
          path: /^\/test\/committed$/,
          access: null,
          async handle(ctx) {
            send(ctx.res, 201, { Warning: formatWarning("stored https://cdn.example.com/layer-😀.tar"), "X-Name": "layer-😀\u0001" });
          },
        },
      ],
    },
  );
  try {
    const res = await fetch(`${running.url}/test/committed`, { method: "PUT" });
    assert.equal(res.status, 201);
    assert.equal(res.headers.get("warning"), '299 - "stored https://cdn.example.com/layer-%F0%9F%98%80.tar"');
    assert.equal(res.headers.get("x-name"), "layer-%F0%9F%98%80%01");
  } finally {
    await running.close();
    await rm(r.dataDir + "-x", { recursive: true, force: true });
  }
});

test("formatWarning and safeHeaders: quotes, newlines, controls and non-Latin-1 characters", () => {
  assert.equal(formatWarning('a "b"\r\nc\\d'), `299 - "a 'b' c'd"`);
  assert.equal(formatWarning("x\u0000y\u2028z😀"), '299 - "x%00y%E2%80%A8z%F0%9F%98%80"');
  assert.deepEqual(safeHeaders({ A: "ok", B: 5, C: ["x😀", "y"], D: "café" }), { A: "ok", B: 5, C: ["x%F0%9F%98%80", "y"], D: "café" });
});
