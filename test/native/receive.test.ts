/**
 * The addon's receive (request bodies read straight into a slab, off the
 * event loop): exactly the bytes asked for land where asked, nothing past them
 * is read, and every way a body can stop ends the receive with its reason.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { constants as osConstants } from "node:os";
import { randomBytes } from "node:crypto";
import { loadNativeAddon, nativeReceiveAvailable, startReceive } from "../../src/native/addon.js";
import { socketPair } from "../helpers/socket-pair.js";

const state = loadNativeAddon();
const skip = nativeReceiveAvailable() ? false : "reason" in state ? state.reason : "the addon predates receive";
if (skip && process.env.REQUIRE_E2E_TOOLS === "1") throw new Error(`native receive required in CI: ${skip}`);
const { ECONNRESET, ETIMEDOUT, ECANCELED } = osConstants.errno;

test("receives exactly the bytes asked for, at the offset asked for, and leaves what follows unread", { skip }, async () => {
  const p = await socketPair();
  const body = randomBytes(3 * 1024 * 1024 + 17);
  const after = Buffer.from("GET /next HTTP/1.1\r\n\r\n");
  p.client.write(Buffer.concat([body, after]));
  const target = new Uint8Array(new SharedArrayBuffer(4 * 1024 * 1024)).fill(0xee);
  const errno = await startReceive(p.fd, target, 100, body.length, 5000).done;
  assert.equal(errno, 0);
  assert.ok(Buffer.from(target.buffer, 100, body.length).equals(body), "the bytes landed in order at the offset");
  assert.equal(target[99], 0xee, "nothing before the offset was written");
  assert.equal(target[100 + body.length], 0xee, "nothing after the range was written");
  // What the client sent after the body is still in the socket, for Node to read.
  p.server.resume();
  const next = await new Promise<Buffer>((resolve) => p.server.once("data", resolve));
  assert.equal(next.toString(), after.toString());
  p.close();
});

test("bytes that arrive slowly, in small pieces, are all received", { skip }, async () => {
  const p = await socketPair();
  const body = randomBytes(256 * 1024);
  const target = new Uint8Array(body.length);
  const receiving = startReceive(p.fd, target, 0, body.length, 5000).done;
  for (let at = 0; at < body.length; at += 64 * 1024) {
    p.client.write(body.subarray(at, at + 64 * 1024));
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.equal(await receiving, 0);
  assert.ok(Buffer.from(target).equals(body));
  p.close();
});

test("the peer closing before the body ended is ECONNRESET", { skip }, async () => {
  const p = await socketPair();
  const receiving = startReceive(p.fd, new Uint8Array(1024), 0, 1024, 5000).done;
  p.client.end(Buffer.alloc(100));
  assert.equal(await receiving, ECONNRESET);
  p.close();
});

test("no byte for the idle timeout is ETIMEDOUT, measured from the last byte", { skip }, async () => {
  const p = await socketPair();
  const started = Date.now();
  const receiving = startReceive(p.fd, new Uint8Array(1024), 0, 1024, 300).done;
  setTimeout(() => p.client.write(Buffer.alloc(10)), 200);
  assert.equal(await receiving, ETIMEDOUT);
  const took = Date.now() - started;
  assert.ok(took >= 480 && took < 2000, `timed out after ${took} ms (a byte came at 200 ms, the timeout is 300 ms)`);
  p.close();
});

test("cancel ends a waiting receive with ECANCELED and leaves the connection usable", { skip }, async () => {
  const p = await socketPair();
  const job = startReceive(p.fd, new Uint8Array(1024), 0, 1024, 10_000);
  const started = Date.now();
  setTimeout(() => job.cancel(), 100);
  assert.equal(await job.done, ECANCELED);
  assert.ok(Date.now() - started < 2000);
  // Not shut down: both directions still work.
  p.server.write("reply");
  const reply = await new Promise<Buffer>((resolve) => p.client.once("data", resolve));
  assert.equal(reply.toString(), "reply");
  p.client.write("more");
  p.server.resume();
  const more = await new Promise<Buffer>((resolve) => p.server.once("data", resolve));
  assert.equal(more.toString(), "more");
  p.close();
});

test("Node closing its descriptor does not end the receive by itself: the duplicate is the thread's, cancel is what ends it", { skip }, async () => {
  const p = await socketPair();
  const job = startReceive(p.fd, new Uint8Array(1024), 0, 1024, 10_000);
  p.server.destroy();
  await new Promise((resolve) => setTimeout(resolve, 50));
  p.client.write(Buffer.alloc(1024, 7));
  assert.equal(await job.done, 0, "the thread still read from its own duplicate");
  p.close();
});

test("bad arguments throw before anything starts", { skip }, () => {
  if (!("addon" in state) || !state.addon.receive) return;
  const receive = state.addon.receive;
  const done = () => undefined;
  assert.throws(() => receive(-1, new Uint8Array(8), 0, 8, 1000, done), TypeError);
  assert.throws(() => receive(0, new Uint8Array(8), 4, 8, 1000, done), TypeError, "range past the end of the target");
  assert.throws(() => receive(0, new Uint8Array(8), 0, 0, 1000, done), TypeError, "nothing to receive");
  assert.throws(() => receive(0, new Uint8Array(8), 0, 8, 0, done), TypeError, "no idle timeout");
  assert.throws(() => receive(0, Buffer.alloc(8).buffer as unknown as Uint8Array, 0, 8, 1000, done), TypeError, "not a Uint8Array");
});

test("discard (target null) reads and drops bytes until the peer closes, which is a normal end", { skip }, async () => {
  const p = await socketPair();
  const job = startReceive(p.fd, null, 0, 10 * 1024 * 1024, 5000);
  p.client.write(randomBytes(300 * 1024));
  setTimeout(() => p.client.end(), 50);
  assert.equal(await job.done, 0);
  p.close();
});

test("a serving thread terminated mid-receive: the receive is stopped with it and the process lives on", { skip }, async () => {
  const { Worker } = await import("node:worker_threads");
  const addonUrl = new URL("../../src/native/addon.js", import.meta.url).href;
  const source = `
    import { parentPort } from "node:worker_threads";
    import { createServer, connect } from "node:net";
    import { startReceive } from ${JSON.stringify(addonUrl)};
    const listener = createServer({ pauseOnConnect: true });
    listener.listen(0, "127.0.0.1", () => {
      listener.once("connection", (server) => {
        // Nothing is ever sent: the receive waits in poll, writing into this thread's memory when bytes come.
        startReceive(server._handle.fd, new Uint8Array(1024), 0, 1024, 400);
        parentPort.postMessage("receiving");
      });
      connect(listener.address().port, "127.0.0.1");
    });
  `;
  const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(source)}`));
  await new Promise<void>((resolve, reject) => {
    worker.once("message", () => resolve());
    worker.once("error", reject);
  });
  await worker.terminate();
  // Past the receive's idle timeout: a thread left running would now report into the freed environment.
  await new Promise((resolve) => setTimeout(resolve, 700));
  assert.ok(true, "still alive");
});
