/**
 * A client that dies mid-chunk must not leave half a chunk in the session:
 * the upload stays at its last complete offset and can be resumed to a blob
 * whose digest verifies.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { randomBytes } from "node:crypto";
import { startTestRegistry } from "../helpers/registry.js";
import { sha256 } from "../helpers/images.js";

function sendPartialPatch(host: string, port: number, path: string, declared: number, sent: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect(port, host, () => {
      socket.write(
        `PATCH ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nContent-Type: application/octet-stream\r\nContent-Length: ${declared}\r\n\r\n`,
      );
      socket.write(sent, () => setTimeout(() => socket.destroy(), 50));
    });
    socket.on("close", () => resolve());
    socket.on("error", () => resolve());
  });
}

test("an interrupted PATCH is rolled back and the upload resumes from its last good offset", async (t) => {
  const r = await startTestRegistry();
  t.after(() => r.close());
  const first = randomBytes(100_000);
  const second = randomBytes(150_000);
  const start = await fetch(`${r.url}/v2/abort/test/blobs/uploads/`, { method: "POST" });
  let location = start.headers.get("location")!;
  const patched = await fetch(`${r.url}${location}`, {
    method: "PATCH",
    headers: { "Content-Range": `0-${first.length - 1}`, "Content-Type": "application/octet-stream" },
    body: new Uint8Array(first),
  });
  assert.equal(patched.status, 202);
  location = patched.headers.get("location")!;

  const url = new URL(r.url);
  await sendPartialPatch(url.hostname, Number(url.port), location, second.length, second.subarray(0, 60_000));
  // The server notices the broken connection asynchronously.
  let range = "";
  for (let i = 0; i < 50; i++) {
    const status = await fetch(`${r.url}${location}`);
    assert.equal(status.status, 204);
    range = status.headers.get("range")!;
    if (range === `0-${first.length - 1}`) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.equal(range, `0-${first.length - 1}`, "half a chunk must not count as received");

  const whole = Buffer.concat([first, second]);
  const done = await fetch(`${r.url}${location}?digest=${sha256(whole)}`, {
    method: "PUT",
    headers: { "Content-Range": `${first.length}-${whole.length - 1}`, "Content-Type": "application/octet-stream" },
    body: new Uint8Array(second),
  });
  assert.equal(done.status, 201, await done.text());
  const blob = await fetch(`${r.url}/v2/abort/test/blobs/${sha256(whole)}`);
  assert.equal(sha256(Buffer.from(await blob.arrayBuffer())), sha256(whole));
});
