/**
 * Per-client limits and who the client is (hardening issue, defects 3 and 5):
 * at most `http.maxUploadsPerClient` upload requests in progress per client
 * (the next gets 429 TOOMANYREQUESTS in the spec's format, other clients are
 * unaffected), and X-Forwarded-For believed only from `trustedProxies`.
 * Loopback has a whole /8, so "other clients" connect from 127.0.0.x.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { rm } from "node:fs/promises";
import { pino } from "pino";
import { startTestRegistry, type TestRegistry } from "../helpers/registry.js";
import { loadConfig } from "../../src/config/load.js";
import { startRegistry } from "../../src/server.js";
import { RegistryError } from "../../src/oci/errors.js";
import { ClientAddressResolver, clientKey } from "../../src/http/client-address.js";
import { uid } from "./client.js";
import { exchange, holdOpen } from "./raw-socket.js";

const LIMIT = 3;
const PROXY = "127.0.0.5";

let reg: TestRegistry;
let repo: string;
const held: Array<{ socket: { destroy(): void } }> = [];

before(async () => {
  reg = await startTestRegistry({ http: { maxUploadsPerClient: LIMIT, requestIdleTimeout: "20s" }, trustedProxies: [PROXY] });
  repo = uid("limits/");
});
after(async () => {
  for (const h of held) h.socket.destroy();
  await reg?.close();
});

/** A monolithic push that declares 1 MB and sends 1 byte, then waits: an upload in progress. */
async function holdUpload(from: string, forwardedFor?: string): Promise<void> {
  const xff = forwardedFor ? `X-Forwarded-For: ${forwardedFor}\r\n` : "";
  held.push(await holdOpen(reg.url, `POST /v2/${repo}/blobs/uploads/?digest=sha256:${"a".repeat(64)} HTTP/1.1\r\nHost: x\r\n${xff}Content-Length: 1000000\r\n\r\nx`, from));
}

async function startSession(from: string, forwardedFor?: string): Promise<{ status: number; raw: string }> {
  const xff = forwardedFor ? `X-Forwarded-For: ${forwardedFor}\r\n` : "";
  return exchange(reg.url, [`POST /v2/${repo}/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n${xff}Content-Length: 0\r\nConnection: close\r\n\r\n`], 0, 5000, from);
}

async function settle(): Promise<void> {
  await new Promise((r) => setTimeout(r, 150));
}

describe("http.maxUploadsPerClient", () => {
  it("the next upload from the same client gets 429 TOOMANYREQUESTS; other clients are unaffected", async () => {
    for (let i = 0; i < LIMIT; i++) await holdUpload("127.0.0.1");
    await settle();
    const refused = await startSession("127.0.0.1");
    assert.equal(refused.status, 429, refused.raw.slice(0, 300));
    assert.match(refused.raw, /"errors":\[\{"code":"TOOMANYREQUESTS"/);
    assert.match(refused.raw, /\r\nretry-after: \d+\r\n/i);
    const other = await startSession("127.0.0.3");
    assert.equal(other.status, 202, other.raw.slice(0, 300));
    // Reads are not uploads: the same client can still pull.
    const read = await exchange(reg.url, ["GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"], 0, 5000, "127.0.0.1");
    assert.equal(read.status, 200);
  });

  it("a finished or abandoned upload gives its slot back", async () => {
    for (const h of held.splice(0)) h.socket.destroy();
    await settle();
    const again = await startSession("127.0.0.1");
    assert.equal(again.status, 202, again.raw.slice(0, 300));
  });

  it("manifest pushes and token forms whose bodies trickle count too (no memory held without limit)", async () => {
    const from = "127.0.0.7";
    for (let i = 0; i < LIMIT; i++) {
      held.push(await holdOpen(reg.url, `PUT /v2/${repo}/manifests/t${i} HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 4000000\r\n\r\n{`, from));
    }
    await settle();
    const refused = await exchange(
      reg.url,
      [`PUT /v2/${repo}/manifests/more HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 4000000\r\nConnection: close\r\n\r\n{`],
      0,
      5000,
      from,
    );
    assert.equal(refused.status, 429, refused.raw.slice(0, 300));
    assert.match(refused.raw, /"code":"TOOMANYREQUESTS"/);
    for (const h of held.splice(0)) h.socket.destroy();
  });
});

describe("trustedProxies and X-Forwarded-For", () => {
  it("behind a trusted proxy, clients are told apart by X-Forwarded-For", async () => {
    for (let i = 0; i < LIMIT; i++) await holdUpload(PROXY, "203.0.113.7");
    await settle();
    const same = await startSession(PROXY, "203.0.113.7");
    assert.equal(same.status, 429, same.raw.slice(0, 200));
    const other = await startSession(PROXY, "203.0.113.8");
    assert.equal(other.status, 202, other.raw.slice(0, 200));
    // The rightmost untrusted hop counts: what the client wrote to the left proves nothing.
    const spoofedLeft = await startSession(PROXY, "198.51.100.1, 203.0.113.7");
    assert.equal(spoofedLeft.status, 429, spoofedLeft.raw.slice(0, 200));
  });

  it("from an untrusted peer, X-Forwarded-For is ignored (no dodging the cap by inventing addresses)", async () => {
    for (let i = 0; i < LIMIT; i++) await holdUpload("127.0.0.6", `198.51.100.${i}`);
    await settle();
    const res = await startSession("127.0.0.6", "198.51.100.99");
    assert.equal(res.status, 429, res.raw.slice(0, 200));
  });

  it("ClientAddressResolver: rightmost untrusted hop, CIDRs, IPv4-mapped peers, garbage hops", () => {
    const resolver = new ClientAddressResolver(["10.0.0.0/8", "::1"]);
    assert.equal(resolver.resolve("10.1.2.3", "1.1.1.1, 2.2.2.2, 10.9.9.9"), "2.2.2.2");
    assert.equal(resolver.resolve("::ffff:10.1.2.3", "2.2.2.2"), "2.2.2.2");
    assert.equal(resolver.resolve("::1", "2001:db8::1"), "2001:db8::1");
    assert.equal(resolver.resolve("192.0.2.1", "2.2.2.2"), "192.0.2.1", "untrusted peer");
    assert.equal(resolver.resolve("10.1.2.3", "10.2.2.2, 10.3.3.3"), "10.2.2.2", "all hops trusted: the leftmost");
    assert.equal(resolver.resolve("10.1.2.3", "nonsense, 10.3.3.3"), "10.3.3.3", "a garbage hop stops the walk");
    assert.equal(resolver.resolve("10.1.2.3", undefined), "10.1.2.3");
    assert.equal(new ClientAddressResolver([]).resolve("::ffff:127.0.0.1", "1.2.3.4"), "127.0.0.1");
    assert.equal(clientKey("2001:db8:1:2:3:4:5:6"), clientKey("2001:db8:1:2:ffff::1"), "IPv6 clients are keyed by /64");
    assert.notEqual(clientKey("2001:db8:1:2::1"), clientKey("2001:db8:1:3::1"));
  });

  it("the config refuses an entry that is not an IP or CIDR", () => {
    assert.throws(() => loadConfig({ overrides: { trustedProxies: ["10.0.0.0/33"] } }), /trustedProxies/);
    assert.throws(() => loadConfig({ overrides: { trustedProxies: ["proxy.example"] } }), /trustedProxies/);
  });
});

describe("logs: the access log names the resolved client; expected failures are one line", () => {
  it("502 from an upstream: one warn line with the reason, no stack; a bug: error with stack", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        for (const line of chunk.toString().split("\n")) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
        callback();
      },
    });
    const config = loadConfig({ env: {}, overrides: { listen: "127.0.0.1:0", data: reg.dataDir + "-logs", trustedProxies: [PROXY] } });
    const running = await startRegistry(config, {
      logger: pino({ level: "info" }, sink),
      extensions: [
        {
          method: "GET",
          path: /^\/test\/upstream$/,
          access: null,
          async handle() {
            throw new RegistryError("UNAVAILABLE", "foreign layer could not be fetched from https://cdn.example.com/l.tar: HTTP 500", {
              status: 502,
              detail: { urls: ["https://cdn.example.com/l.tar"] },
            });
          },
        },
        {
          method: "GET",
          path: /^\/test\/bug$/,
          access: null,
          async handle() {
            throw new TypeError("cannot read properties of undefined");
          },
        },
      ],
    });
    try {
      for (let i = 0; i < 3; i++) {
        const res = await exchange(running.url, ["GET /test/upstream HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n"], 0, 5000, PROXY);
        assert.equal(res.status, 502);
      }
      const bug = await exchange(running.url, ["GET /test/bug HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]);
      assert.equal(bug.status, 500);
      await new Promise((r) => setTimeout(r, 200));
      const failures = lines.filter((l) => typeof l.msg === "string" && (l.msg as string).startsWith("request failed"));
      const upstream = failures.filter((l) => l.status === 502);
      assert.equal(upstream.length, 3, JSON.stringify(failures));
      for (const line of upstream) {
        assert.equal(line.level, 40, "warn, not error");
        assert.equal(line.err, undefined, "no error object, so no stack trace");
        assert.match(String(line.reason), /cdn\.example\.com\/l\.tar: HTTP 500/);
        assert.doesNotMatch(JSON.stringify(line), /\n\s+at /);
      }
      const bugs = failures.filter((l) => l.status === undefined || l.status === 500);
      assert.equal(bugs.length, 1, JSON.stringify(failures));
      assert.equal(bugs[0]!.level, 50);
      assert.match(JSON.stringify(bugs[0]!.err), /stack/);
      const access = lines.filter((l) => l.msg === "request" && l.path === "/test/upstream");
      assert.ok(access.length > 0 && access.every((l) => l.client === "203.0.113.9"), JSON.stringify(access));
    } finally {
      await running.close();
      await rm(reg.dataDir + "-logs", { recursive: true, force: true });
    }
  });
});
