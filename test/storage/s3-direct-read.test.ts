/**
 * Blob GETs through reused buffers (s3-direct-read.ts) against a fake object
 * store: every byte arrives intact even when the client reads slower than the
 * store sends (a buffer is never read into while its bytes are still being
 * written), and a store that answers wrongly or stops early is an error,
 * never a short blob delivered as a whole one.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { randomBytes } from "node:crypto";
import { PassThrough, Writable } from "node:stream";
import { openDirectGet } from "../../src/storage/s3-direct-read.js";
import { ClientGoneError } from "../../src/storage/blob-store.js";

/** A one-shot HTTP server that writes `respond`'s bytes raw, in pieces, and records the request. */
async function fakeStore(respond: (request: string, socket: net.Socket) => void): Promise<{ url: string; close: () => void; requests: string[] }> {
  const requests: string[] = [];
  const server = net.createServer((socket) => {
    let head = "";
    socket.on("data", (chunk) => {
      head += chunk.toString("latin1");
      if (head.includes("\r\n\r\n")) {
        requests.push(head);
        respond(head, socket);
      }
    });
    socket.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return { url: `http://127.0.0.1:${port}/bucket/blobs/sha256/x?X-Amz-Signature=abc`, close: () => server.close(), requests };
}

function sendInPieces(socket: net.Socket, head: string, body: Buffer, options: { cutAt?: number } = {}): void {
  socket.write(head);
  const limit = options.cutAt ?? body.length;
  let at = 0;
  const more = () => {
    while (at < limit) {
      const end = Math.min(limit, at + 100_000 + Math.floor(Math.random() * 200_000));
      const ok = socket.write(body.subarray(at, end));
      at = end;
      if (!ok) return void socket.once("drain", more);
    }
    socket.end();
  };
  more();
}

/** A client that takes its time: each write completes a little later, and keeps its own copies. */
function slowClient(): { out: Writable; bytes: () => Buffer } {
  const kept: Buffer[] = [];
  const out = new Writable({
    highWaterMark: 16 * 1024,
    write(chunk: Buffer, _encoding, callback) {
      // Copied only once the write completes: were the buffer reused early, the copy would show it.
      setTimeout(() => {
        kept.push(Buffer.from(chunk));
        callback();
      }, 1);
    },
  });
  return { out, bytes: () => Buffer.concat(kept) };
}

test("a blob larger than the buffer ring arrives intact through a slow client, and the request asks for what was signed", async () => {
  const body = randomBytes(6 * 1024 * 1024 + 17);
  const store = await fakeStore((_request, socket) => sendInPieces(socket, `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`, body));
  try {
    const direct = await openDirectGet(store.url, undefined, body.length, 5_000);
    const client = slowClient();
    await direct.sendTo(client.out);
    assert.ok(client.bytes().equals(body));
    assert.match(store.requests[0]!, /^GET \/bucket\/blobs\/sha256\/x\?X-Amz-Signature=abc HTTP\/1\.1\r\n/);
    assert.doesNotMatch(store.requests[0]!, /\r\nRange:/i);
  } finally {
    store.close();
  }
});

test("a range is asked for with a Range header and must come back as 206 of exactly its length", async () => {
  const body = randomBytes(300_000);
  const store = await fakeStore((_request, socket) => sendInPieces(socket, `HTTP/1.1 206 Partial Content\r\nContent-Length: ${body.length}\r\n\r\n`, body));
  try {
    const direct = await openDirectGet(store.url, { start: 10, end: 10 + body.length - 1 }, body.length, 5_000);
    const sink = new PassThrough();
    const chunks: Buffer[] = [];
    sink.on("data", (c: Buffer) => chunks.push(Buffer.from(c)));
    await direct.sendTo(sink);
    assert.ok(Buffer.concat(chunks).equals(body));
    assert.match(store.requests[0]!, /\r\nRange: bytes=10-300009\r\n/);
  } finally {
    store.close();
  }
  // A store that ignores the range (200 with the whole object) is refused before anything is sent.
  const whole = await fakeStore((_request, socket) => sendInPieces(socket, `HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n`, Buffer.alloc(10)));
  try {
    await assert.rejects(openDirectGet(whole.url, { start: 0, end: 4 }, 5, 5_000), /answered HTTP 200/);
  } finally {
    whole.close();
  }
});

test("a missing object, a wrong length or a chunked answer fails the open, before the client is answered", async () => {
  const cases: Array<[string, RegExp, number | undefined]> = [
    ["HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", /HTTP 404/, 404],
    ["HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", /announced 99 bytes, 100 expected/, undefined],
    ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", /announced no bytes/, undefined],
  ];
  for (const [head, message, status] of cases) {
    const store = await fakeStore((_request, socket) => socket.end(head));
    try {
      await assert.rejects(openDirectGet(store.url, undefined, 100, 5_000), (error: Error & { status?: number }) => {
        assert.match(error.message, message);
        assert.equal(error.status, status);
        return true;
      });
    } finally {
      store.close();
    }
  }
});

test("a store that stops mid-body fails the transfer instead of ending the blob short", async () => {
  const body = randomBytes(3 * 1024 * 1024);
  const store = await fakeStore((_request, socket) => sendInPieces(socket, `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`, body, { cutAt: 2 * 1024 * 1024 }));
  try {
    const direct = await openDirectGet(store.url, undefined, body.length, 5_000);
    await assert.rejects(direct.sendTo(slowClient().out), /sent \d+ of 3145728 bytes/);
  } finally {
    store.close();
  }
});

test("a store that goes silent mid-body fails the transfer after the idle timeout", async () => {
  const store = await fakeStore((_request, socket) => socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n${"x".repeat(10)}`));
  try {
    const direct = await openDirectGet(store.url, undefined, 1000, 300);
    await assert.rejects(direct.sendTo(slowClient().out), /stopped answering/);
  } finally {
    store.close();
  }
});

test("a client that goes away ends the transfer with ClientGoneError and closes the store's connection", async () => {
  const body = randomBytes(8 * 1024 * 1024);
  let storeSocket: net.Socket | null = null;
  const store = await fakeStore((_request, socket) => {
    storeSocket = socket;
    sendInPieces(socket, `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`, body);
  });
  try {
    const direct = await openDirectGet(store.url, undefined, body.length, 5_000);
    const client = slowClient();
    const sending = direct.sendTo(client.out);
    setTimeout(() => client.out.destroy(), 20);
    await assert.rejects(sending, ClientGoneError);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(storeSocket !== null && (storeSocket as net.Socket).destroyed, "the store's connection is closed");
  } finally {
    store.close();
  }
});

test("a store that fails between answering and the first byte sent fails the transfer at once", { timeout: 5_000 }, async () => {
  const store = await fakeStore((_request, socket) => socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n`));
  try {
    const direct = await openDirectGet(store.url, undefined, 1000, 100);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await assert.rejects(direct.sendTo(slowClient().out), /stopped answering/);
  } finally {
    store.close();
  }
});
