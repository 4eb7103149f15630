/**
 * Slow and idle clients (hardening issue, defect 3). A request body that goes
 * quiet must be cut off after `http.requestIdleTimeout` (nginx's
 * client_body_timeout), releasing its socket, its session file and the
 * session; idle keep-alive connections are closed after
 * `http.keepAliveTimeout`; headers that never finish are cut off after
 * `http.headersTimeout` (slowloris). Timeouts are configured short here.
 *
 * The server runs in this process, so /proc/self/fd counts its descriptors.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { OCI_MANIFEST, newUploadSession, rawRequest, sha256, uid } from "./client.js";
import { exchange, holdOpen, settleDescriptors, uploadFiles } from "./raw-socket.js";

const IDLE_MS = 500;

let reg: TestRegistry;
let repo: string;

before(async () => {
  reg = await startTestRegistry({
    http: { requestIdleTimeout: `${IDLE_MS}ms`, keepAliveTimeout: "600ms", headersTimeout: "800ms" },
  });
  repo = uid("slow/");
});
after(async () => {
  await reg?.close();
});

function newSession(): Promise<string> {
  return newUploadSession(reg.url, repo);
}

/** The session takes a normal chunk at once (its lock is free) and reports `size` bytes before it. */
async function assertSessionUsable(session: string, sizeBefore: number): Promise<void> {
  const started = Date.now();
  const patch = await rawRequest(reg.url, `PATCH ${session} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`, 3000);
  assert.equal(patch.status, 202, `PATCH on the session afterwards: ${patch.raw.slice(0, 300)}`);
  assert.match(patch.headers, new RegExp(`\\r\\nrange: 0-${sizeBefore + 4}\\r\\n`, "i"), "the cut-off chunk was rolled back");
  assert.ok(Date.now() - started < 1500, `the session answered in ${Date.now() - started} ms`);
}

describe("a body that goes quiet is cut off after http.requestIdleTimeout", () => {
  const cases = [
    { what: "PATCH", head: (session: string) => `PATCH ${session} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nx` },
    { what: "PUT ?digest= with a body", head: (session: string) => `PUT ${session}?digest=${sha256("x")} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nx` },
    { what: "chunked PATCH", head: (session: string) => `PATCH ${session} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n` },
    { what: "POST ?digest= (monolithic)", head: () => `POST /v2/${repo}/blobs/uploads/?digest=${sha256("x")} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nx` },
  ];
  for (const c of cases) {
    it(`${c.what}: 408 in the spec's format, connection closed, descriptors and session released`, async () => {
      const session = await newSession();
      const baseline = await settleDescriptors();
      const files = await uploadFiles(reg.dataDir);
      const res = await exchange(reg.url, [c.head(session)], 0, IDLE_MS * 8);
      assert.ok(res.closedByServer, `the server closed the connection (after ${res.closedAfterMs} ms)`);
      assert.ok(res.closedAfterMs >= IDLE_MS - 50 && res.closedAfterMs < IDLE_MS * 4, `closed after ${res.closedAfterMs} ms`);
      assert.equal(res.status, 408, res.raw.slice(0, 300));
      assert.match(res.raw, /"errors":\[\{"code":"BLOB_UPLOAD_INVALID"/);
      const now = await settleDescriptors(baseline);
      assert.ok(now <= baseline + 1, `descriptors: ${baseline} before, ${now} after`);
      assert.equal(await uploadFiles(reg.dataDir), files, "no upload file left behind");
      await assertSessionUsable(session, 0);
    });
  }

  it("manifest PUT: 408 MANIFEST_INVALID", async () => {
    const res = await exchange(reg.url, [`PUT /v2/${repo}/manifests/slow HTTP/1.1\r\nHost: x\r\nContent-Type: ${OCI_MANIFEST}\r\nContent-Length: 5000\r\n\r\n{"sch`], 0, IDLE_MS * 8);
    assert.equal(res.status, 408, res.raw.slice(0, 300));
    assert.match(res.raw, /"code":"MANIFEST_INVALID"/);
    assert.ok(res.closedByServer);
  });

  it("a body that keeps moving slowly is not cut off", async () => {
    const session = await newSession();
    const bytes = "abcdefghijkl";
    const parts = [`PATCH ${session} HTTP/1.1\r\nHost: x\r\nContent-Length: ${bytes.length}\r\nConnection: close\r\n\r\n`, ...bytes.split("")];
    // Each gap is well below the idle timeout (room for a loaded machine's timer lag), the whole body takes longer than it.
    const res = await exchange(reg.url, parts, IDLE_MS / 5, 10_000);
    assert.equal(res.status, 202, res.raw.slice(0, 300));
  });

  it("a client that hangs up mid-body before the handler reads leaves the session usable", async () => {
    const session = await newSession();
    for (let i = 0; i < 5; i++) {
      const held = await holdOpen(reg.url, `PATCH ${session} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc`);
      held.socket.destroy();
    }
    await assertSessionUsable(session, 0);
  });
});

describe("idle connections", () => {
  it("an idle keep-alive connection is closed after http.keepAliveTimeout", async () => {
    const held = await holdOpen(reg.url, "GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n");
    const closedAfter = await Promise.race([held.closed, new Promise<number>((r) => setTimeout(() => r(-1), 8000))]);
    held.socket.destroy();
    assert.match(held.received(), /^HTTP\/1\.1 200/);
    assert.ok(closedAfter > 0 && closedAfter < 4000, `closed after ${closedAfter} ms`);
  });

  it("headers that never finish (slowloris) are cut off after http.headersTimeout with 408", async () => {
    const held = await holdOpen(reg.url, "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    const trickle = setInterval(() => held.socket.write("a"), 100);
    const closedAfter = await Promise.race([held.closed, new Promise<number>((r) => setTimeout(() => r(-1), 8000))]);
    clearInterval(trickle);
    held.socket.destroy();
    assert.ok(closedAfter > 0 && closedAfter < 4000, `closed after ${closedAfter} ms`);
    assert.match(held.received(), /^HTTP\/1\.1 408/);
  });

  it("a connection that never sends a byte is closed after http.headersTimeout", async () => {
    const held = await holdOpen(reg.url, "");
    const closedAfter = await Promise.race([held.closed, new Promise<number>((r) => setTimeout(() => r(-1), 8000))]);
    held.socket.destroy();
    assert.ok(closedAfter > 0 && closedAfter < 4000, `closed after ${closedAfter} ms`);
  });
});
