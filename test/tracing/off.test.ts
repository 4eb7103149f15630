/**
 * Tracing off costs nothing: a real `ferry serve` that pushes and pulls
 * without tracing never loads an OpenTelemetry module. A module resolve hook
 * (node:module register, via NODE_OPTIONS) writes every module the process
 * resolves to a file; with tracing on, the same check sees OpenTelemetry
 * (so the hook is known to see what it should).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { startServeProcess } from "../helpers/serve-process.js";
import { buildImage, pushImage } from "../helpers/images.js";

const HOOKS = `
import { appendFileSync } from "node:fs";
export async function resolve(specifier, context, nextResolve) {
  const result = await nextResolve(specifier, context);
  appendFileSync(process.env.OBS_TEST_MODULE_LOG, result.url + "\\n");
  return result;
}
`;
const REGISTER = `
import { register } from "node:module";
register(new URL("./hooks.mjs", import.meta.url));
`;

async function modulesLoadedBy(env: Record<string, string>): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), "ferry-modules-"));
  try {
    await writeFile(join(dir, "hooks.mjs"), HOOKS);
    await writeFile(join(dir, "register.mjs"), REGISTER);
    const log = join(dir, "modules.log");
    await writeFile(log, "");
    const serve = await startServeProcess({
      data: join(dir, "data"),
      env: { NODE_OPTIONS: `--import ${pathToFileURL(join(dir, "register.mjs")).href}`, OBS_TEST_MODULE_LOG: log, ...env },
    });
    try {
      const image = await buildImage();
      await pushImage(serve.url, "app", "v1", image);
      const res = await fetch(`${serve.url}/v2/app/manifests/v1`, { headers: { Accept: image.mediaType } });
      assert.equal(res.status, 200);
      await res.arrayBuffer();
    } finally {
      await serve.stop();
    }
    return (await readFile(log, "utf8")).split("\n").filter(Boolean);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test("with tracing off (the default) no OpenTelemetry module is loaded; with it on, they are", async () => {
  const off = await modulesLoadedBy({});
  assert.ok(off.some((url) => url.endsWith("/dist/src/server.js")), "the hook saw the registry's own modules");
  assert.deepEqual(off.filter((url) => url.includes("@opentelemetry")), []);
  assert.ok(!off.some((url) => url.includes("/src/tracing/tracing.js")));

  // Port 9 (discard) on loopback: nothing listens, exports fail quietly.
  const on = await modulesLoadedBy({ FERRY_TRACING__ENABLED: "true", FERRY_TRACING__ENDPOINT: "http://127.0.0.1:9/v1/traces" });
  assert.ok(on.some((url) => url.includes("@opentelemetry/sdk-trace-base")), "the hook sees OpenTelemetry when tracing is on");
});
