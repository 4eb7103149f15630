/**
 * Requests Node would answer on its own, with a bare body or none at all: a
 * missing Host, an unknown Expect, CONNECT. Each gets an answer in the spec's
 * error format and the connection closed, like every other client mistake.
 */
import { after, before, it } from "node:test";
import assert from "node:assert/strict";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { exchange } from "./raw-socket.js";

let reg: TestRegistry;
before(async () => {
  reg = await startTestRegistry();
});
after(async () => {
  await reg?.close();
});

for (const [what, request, status] of [
  ["an HTTP/1.1 request without Host", "GET /v2/ HTTP/1.1\r\n\r\n", 400],
  ["an Expect other than 100-continue", "PUT /v2/x/y/manifests/t HTTP/1.1\r\nHost: x\r\nExpect: foo\r\nContent-Length: 2\r\n\r\n{}", 417],
  ["CONNECT", "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n", 405],
] as const) {
  it(`${what}: ${status} in the spec's error format`, async () => {
    const res = await exchange(reg.url, [request], 0, 5000);
    assert.equal(res.status, status, res.raw.slice(0, 300));
    assert.match(res.raw, /\r\n\r\n\{"errors":\[\{"code":"[A-Z_]+","message":"/);
  });
}

it("HTTP/1.0 without Host is still served", async () => {
  const res = await exchange(reg.url, ["GET /v2/ HTTP/1.0\r\n\r\n"], 0, 5000);
  assert.equal(res.status, 200, res.raw.slice(0, 300));
});
