/**
 * Malformed request framing (hardening issue, defect 2). RFC 9112 §6.1: a
 * server that receives a request whose Transfer-Encoding it does not
 * understand or whose final coding is not `chunked` MUST answer 400 and close
 * the connection; §6.3: Transfer-Encoding together with Content-Length is an
 * attack or a broken client. Ferry must refuse such a request before any
 * handler starts storing its body: otherwise Node's parser fails on the body
 * later, the body stream never ends, each request leaks descriptors and an
 * upload file, and the session's lock is held for ever.
 *
 * The server runs in this process, so /proc/self/fd counts its descriptors.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { SPEC_ERROR_CODES, rawRequest, sha256, uid } from "./client.js";
import { exchange, openDescriptors, settleDescriptors, uploadFiles } from "./raw-socket.js";

let reg: TestRegistry;
let repo: string;
let session: string;

before(async () => {
  reg = await startTestRegistry();
  repo = uid("framing/");
  const start = await rawRequest(reg.url, `POST /v2/${repo}/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
  assert.equal(start.status, 202);
  session = /\r\nlocation: ([^\r]+)/i.exec(start.headers)![1]!;
});
after(async () => {
  await reg?.close();
});

/** Transfer-Encoding values a server must not treat as chunked (the list, and relatives). */
const BAD_TE = ["xchunked", "identity", "gzip", "deflate", "chunked;q=1", "gzip, chunked", "chunked, identity", ""];

function requestsFor(te: string): Array<{ what: string; head: string }> {
  const digest = sha256("hello");
  return [
    { what: "POST ?digest=", head: `POST /v2/${repo}/blobs/uploads/?digest=${digest} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ${te}\r\n\r\n` },
    { what: "PATCH", head: `PATCH ${session} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ${te}\r\n\r\n` },
    { what: "PUT ?digest=", head: `PUT ${session}?digest=${digest} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ${te}\r\n\r\n` },
  ];
}

function assertFramingRefused(status: number, raw: string, what: string): void {
  assert.equal(status, 400, `${what}: ${raw.slice(0, 300)}`);
  assert.match(raw, /\r\nconnection: close\r\n/i, `${what}: the connection must be closed`);
  const body = raw.slice(raw.indexOf("\r\n\r\n") + 4);
  const parsed = JSON.parse(body) as { errors: Array<{ code: string }> };
  assert.ok(SPEC_ERROR_CODES.includes(parsed.errors[0]!.code), `${what}: ${body}`);
}

describe("malformed Transfer-Encoding is refused before dispatch", () => {
  let baseline: number;
  let filesBefore: number;
  before(async () => {
    baseline = await settleDescriptors();
    filesBefore = await uploadFiles(reg.dataDir);
  });

  for (const te of BAD_TE) {
    it(`Transfer-Encoding: "${te}" on POST ?digest=, PATCH and PUT, body in the same write`, async () => {
      for (const { what, head } of requestsFor(te)) {
        const res = await exchange(reg.url, [head + "5\r\nhello\r\n0\r\n\r\n"]);
        assertFramingRefused(res.status, res.raw, `${what} TE=${te}`);
      }
    });
    it(`Transfer-Encoding: "${te}", body sent after the headers`, async () => {
      for (const { what, head } of requestsFor(te)) {
        const res = await exchange(reg.url, [head, "5\r\nhello\r\n0\r\n\r\n"], 50);
        assertFramingRefused(res.status, res.raw, `${what} TE=${te} (late body)`);
      }
    });
  }

  it("Transfer-Encoding together with Content-Length, and two Transfer-Encoding fields", async () => {
    for (const extra of ["Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"]) {
      const res = await exchange(reg.url, [`PATCH ${session} HTTP/1.1\r\nHost: x\r\n${extra}\r\n5\r\nhello\r\n0\r\n\r\n`]);
      assert.equal(res.status, 400, `${extra}: ${res.raw.slice(0, 200)}`);
    }
  });

  it("afterwards: descriptors back at the baseline, no upload file left, the session answers at once", async () => {
    const now = await settleDescriptors(baseline);
    assert.ok(now <= baseline + 2, `descriptors: ${baseline} before, ${now} after (${readdirSync("/proc/self/fd").length})`);
    assert.equal(await uploadFiles(reg.dataDir), filesBefore, "every refused request left no upload file behind");
    const started = Date.now();
    const patch = await rawRequest(reg.url, `PATCH ${session} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`, 3000);
    assert.equal(patch.status, 202, `PATCH after the abuse: ${patch.raw.slice(0, 200)}`);
    const put = await rawRequest(reg.url, `PUT ${session}?digest=${sha256("hello")} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`, 3000);
    assert.equal(put.status, 201, `PUT after the abuse: ${put.raw.slice(0, 200)}`);
    assert.ok(Date.now() - started < 2000, "the session's lock was free");
  });

  it("a valid chunked upload still works (Transfer-Encoding: chunked, any case)", async () => {
    for (const te of ["chunked", "Chunked"]) {
      const res = await exchange(reg.url, [
        `POST /v2/${repo}/blobs/uploads/?digest=${sha256("hello")} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ${te}\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
      ]);
      assert.equal(res.status, 201, `${te}: ${res.raw.slice(0, 200)}`);
    }
  });
});

describe("header limits", () => {
  it("more header fields than http.maxHeaderCount: 431 in the spec's format, nothing dispatched", async () => {
    const many = Array.from({ length: 150 }, (_, i) => `X-H${i}: v\r\n`).join("");
    const res = await exchange(reg.url, [`GET /v2/ HTTP/1.1\r\nHost: x\r\n${many}Connection: close\r\n\r\n`]);
    assert.equal(res.status, 431, res.raw.slice(0, 200));
    assert.match(res.raw, /"errors":\[\{"code":"UNSUPPORTED"/);
  });

  it("a Transfer-Encoding hidden after thousands of tiny headers is still seen", async () => {
    // Node would drop headers past its default count of 2000; the framing check must see every one.
    const many = Array.from({ length: 2100 }, () => "a:b\r\n").join("");
    const res = await exchange(reg.url, [`PATCH ${session} HTTP/1.1\r\nHost: x\r\n${many}Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`]);
    assert.ok(res.status === 431 || res.status === 400, `got ${res.status}`);
  });

  it("headers larger than http.maxHeaderBytes: 431 in the spec's format", async () => {
    const res = await exchange(reg.url, [`GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(40_000)}\r\n\r\n`]);
    assert.equal(res.status, 431, res.raw.slice(0, 200));
    assert.match(res.raw, /"errors":\[\{"code":"UNSUPPORTED"/);
  });

  it("garbage that is not HTTP gets a 400 in the spec's format", async () => {
    const res = await exchange(reg.url, ["GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"]);
    assert.equal(res.status, 400, res.raw.slice(0, 200));
    assert.match(res.raw, /"errors":\[/);
  });
});

describe("pipelining", () => {
  it("requests pipelined behind a refused one are not served on the broken connection", async () => {
    const res = await exchange(reg.url, [
      `PATCH ${session} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\nDELETE ${session} HTTP/1.1\r\nHost: x\r\n\r\n`,
    ]);
    assert.equal(res.status, 400);
    assert.equal((res.raw.match(/HTTP\/1\.1 /g) ?? []).length, 1, `one answer only: ${res.raw.slice(0, 400)}`);
    const status = await rawRequest(reg.url, `GET ${session} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    assert.notEqual(status.status, 0);
  });

  it("several valid pipelined requests are all answered, in order", async () => {
    const one = `GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n`;
    const res = await exchange(reg.url, [one.repeat(5) + `GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`]);
    assert.equal((res.raw.match(/HTTP\/1\.1 200/g) ?? []).length, 6, res.raw.slice(0, 300));
  });
});
