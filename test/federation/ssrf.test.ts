/**
 * The SSRF-safe fetcher: a matrix of forbidden destinations, each refused
 * with zero connection attempts (docs/federation.md), redirect hops re-checked,
 * bounded time and bytes, nothing identifying sent.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { SafeFetcher, FetchError, type ResolvedAddress } from "../../src/federation/fetcher.js";
import { forbiddenAddressReason } from "../../src/federation/address.js";
import { FakeSource, blob } from "./helpers.js";

/** Every TCP connection attempt made by this process (net emits 'connectionAttempt' right before connect(2)). */
const attempts: Array<{ ip: string; port: number }> = [];
const originalConnect = net.Socket.prototype.connect;
before(() => {
  net.Socket.prototype.connect = function (this: net.Socket, ...args: unknown[]) {
    this.on("connectionAttempt", (ip: string, port: number) => attempts.push({ ip, port }));
    return (originalConnect as (...a: unknown[]) => net.Socket).apply(this, args);
  } as typeof net.Socket.prototype.connect;
});
after(() => {
  net.Socket.prototype.connect = originalConnect;
});

/** A listener on every loopback address (dual-stack ::) counting connections: the targets of the matrix. */
let trap: Server;
let trapConnections = 0;
let trapPort = 0;
before(async () => {
  trap = createServer((_req, res) => res.end("trapped"));
  trap.on("connection", () => trapConnections++);
  await new Promise<void>((resolve) => trap.listen(0, "::", () => resolve()));
  trapPort = (trap.address() as AddressInfo).port;
});
after(() => new Promise<void>((resolve) => trap.close(() => resolve())));

const fakeDns: Record<string, string[]> = {
  "metadata.test": ["169.254.169.254"],
  "intranet.test": ["10.0.0.5"],
  "corp.test": ["192.168.10.10"],
  "cgnat.test": ["100.64.1.1"],
  "ula.test": ["fd00::1"],
  "mcast.test": ["224.0.0.251"],
  "zero.test": ["0.0.0.0"],
  "mapped.test": ["::ffff:127.0.0.1"],
  "rebind.test": ["8.8.8.8", "127.0.0.1"],
};

async function fakeResolve(hostname: string): Promise<ResolvedAddress[]> {
  const entries = fakeDns[hostname];
  if (entries) return entries.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
  if (hostname === "localhost") return [{ address: "127.0.0.1", family: 4 }, { address: "::1", family: 6 }];
  throw new Error(`unknown test host ${hostname}`);
}

function fetcher(options: Partial<ConstructorParameters<typeof SafeFetcher>[0]> = {}): SafeFetcher {
  return new SafeFetcher({ schemes: ["https", "http"], allowPrivateNetworks: false, resolve: fakeResolve, ...options });
}

test("every forbidden destination is refused before any connection is attempted", async () => {
  const p = trapPort;
  const urls = [
    `http://127.0.0.1:${p}/x`,
    `http://2130706433:${p}/x`,
    `http://0x7f000001:${p}/x`,
    `http://0177.0.0.1:${p}/x`,
    `http://017700000001:${p}/x`,
    `http://127.1:${p}/x`,
    `http://127.0.0.2:${p}/x`,
    `http://[::1]:${p}/x`,
    `http://[::ffff:127.0.0.1]:${p}/x`,
    `http://[::ffff:7f00:1]:${p}/x`,
    `http://[0:0:0:0:0:ffff:7f00:1]:${p}/x`,
    `http://0:${p}/x`,
    `http://0.0.0.0:${p}/x`,
    `http://[::]:${p}/x`,
    `http://localhost:${p}/x`,
    `http://mapped.test:${p}/x`,
    `http://zero.test:${p}/x`,
    `http://rebind.test:${p}/x`,
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://metadata.test/latest/meta-data/",
    "http://10.0.0.1/x",
    "http://intranet.test/x",
    "http://172.16.5.4/x",
    "http://192.168.0.1/x",
    "http://corp.test/x",
    "http://100.64.0.1/x",
    "http://cgnat.test/x",
    "http://[fd00::1]/x",
    "http://ula.test/x",
    "http://[fe80::1]/x",
    "http://224.0.0.1/x",
    "http://mcast.test/x",
    "http://[ff02::1]/x",
    "https://10.0.0.1/x",
  ];
  await assertRefusedWithoutConnecting(urls);
});

test("allowPrivateNetworks lifts the address check (the control for the matrix above)", async () => {
  const f = fetcher({ allowPrivateNetworks: true });
  trapConnections = 0;
  const response = await f.fetch({ url: `http://127.0.0.1:${trapPort}/x`, method: "GET", timeoutMs: 2000, maxBytes: 100 });
  assert.equal(response.status, 200);
  response.body.resume();
  f.close();
  assert.equal(trapConnections, 1);
});

/** Treats 127.0.0.1 alone as if it were a public address, so a loopback source can redirect. */
const publicLoopback = (address: string) => (address === "127.0.0.1" ? null : forbiddenAddressReason(address));

test("every redirect hop is checked again: a public source cannot bounce the registry to a forbidden host", async (t) => {
  const source = await new FakeSource().start();
  t.after(() => source.close());
  const f = fetcher({ addressPolicy: publicLoopback });
  t.after(() => f.close());
  const targets = [
    `http://127.0.0.2:${trapPort}/x`,
    `http://[::1]:${trapPort}/x`,
    `http://0x7f000002:${trapPort}/x`,
    `http://metadata.test/latest/meta-data/`,
    `http://[::ffff:169.254.169.254]/`,
  ];
  attempts.length = 0;
  trapConnections = 0;
  for (const [i, target] of targets.entries()) {
    source.behave(`/r${i}`, { kind: "redirect", location: target });
    await assert.rejects(
      f.fetch({ url: source.url(`/r${i}`), method: "GET", timeoutMs: 2000, maxBytes: 100 }),
      (error: unknown) => error instanceof FetchError && error.kind === "refused",
      target,
    );
  }
  assert.equal(trapConnections, 0);
  assert.ok(attempts.every((a) => a.ip === "127.0.0.1" && a.port === source.port), JSON.stringify(attempts));
});

test("redirects: relative and absolute hops are followed up to 5, the 6th is refused; bad schemes are refused", async (t) => {
  const source = await new FakeSource().start();
  t.after(() => source.close());
  const layer = blob(64);
  source.put("/final", layer.bytes);
  for (let i = 1; i <= 6; i++) source.behave(`/hop${i}`, { kind: "redirect", location: i === 1 ? "/final" : source.url(`/hop${i - 1}`), status: 307 });
  const f = fetcher({ allowPrivateNetworks: true });
  t.after(() => f.close());
  const five = await f.fetch({ url: source.url("/hop5"), method: "GET", timeoutMs: 2000, maxBytes: 64 });
  assert.equal(five.status, 200);
  assert.equal(five.url, source.url("/final"));
  five.body.resume();
  await assert.rejects(f.fetch({ url: source.url("/hop6"), method: "GET", timeoutMs: 2000, maxBytes: 64 }), /more than 5 redirects/);

  source.behave("/ftp", { kind: "redirect", location: "ftp://example.com/x" });
  await assert.rejects(f.fetch({ url: source.url("/ftp"), method: "GET", timeoutMs: 2000, maxBytes: 64 }), /scheme "ftp"/);
  source.behave("/creds", { kind: "redirect", location: `http://user:pw@127.0.0.1:${source.port}/final` });
  await assert.rejects(f.fetch({ url: source.url("/creds"), method: "GET", timeoutMs: 2000, maxBytes: 64 }), /userinfo/);
});

test("bytes are bounded by the descriptor's size, announced or not", async (t) => {
  const source = await new FakeSource().start();
  t.after(() => source.close());
  const layer = blob(1000);
  source.put("/layer", layer.bytes);
  const f = fetcher({ allowPrivateNetworks: true });
  t.after(() => f.close());
  await assert.rejects(
    f.fetch({ url: source.url("/layer"), method: "GET", timeoutMs: 2000, maxBytes: 999 }),
    (error: unknown) => error instanceof FetchError && error.kind === "too-large" && /announced 1000 bytes/.test(error.message),
  );
  source.behave("/layer", { kind: "long" });
  const response = await f.fetch({ url: source.url("/layer"), method: "GET", timeoutMs: 2000, maxBytes: 1000 });
  let received = 0;
  await assert.rejects(
    (async () => {
      for await (const chunk of response.body) received += (chunk as Buffer).length;
    })(),
    /more than the 1000 bytes/,
  );
  assert.ok(received <= 1000);
});

test("time is bounded: a silent source and a stalled body both time out", async (t) => {
  const silent = createServer(() => undefined); // accepts, never answers
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", () => resolve()));
  t.after(() => {
    silent.closeAllConnections();
    silent.close();
  });
  const f = fetcher({ allowPrivateNetworks: true });
  t.after(() => f.close());
  const port = (silent.address() as AddressInfo).port;
  const started = Date.now();
  await assert.rejects(
    f.fetch({ url: `http://127.0.0.1:${port}/x`, method: "GET", timeoutMs: 300, maxBytes: 10 }),
    (error: unknown) => error instanceof FetchError && error.kind === "timeout",
  );
  assert.ok(Date.now() - started < 2000);

  const source = await new FakeSource().start();
  t.after(() => source.close());
  const layer = blob(1000);
  source.put("/stall", layer.bytes);
  source.behave("/stall", { kind: "stall", afterBytes: 100 });
  const response = await f.fetch({ url: source.url("/stall"), method: "GET", timeoutMs: 300, maxBytes: 1000 });
  await assert.rejects(
    (async () => {
      for await (const _chunk of response.body) void _chunk;
    })(),
    /stalled: no data for 300ms/,
  );
});

test("no credentials, cookies or client headers are sent to a source", async (t) => {
  const source = await new FakeSource().start();
  t.after(() => source.close());
  source.put("/layer", Buffer.from("hello"));
  const f = fetcher({ allowPrivateNetworks: true });
  t.after(() => f.close());
  const response = await f.fetch({ url: source.url("/layer"), method: "GET", timeoutMs: 2000, maxBytes: 5 });
  response.body.resume();
  const headers = source.requests[0]!.headers;
  assert.equal(headers.authorization, undefined);
  assert.equal(headers.cookie, undefined);
  assert.deepEqual(Object.keys(headers).sort(), ["accept", "accept-encoding", "connection", "host", "user-agent"]);
});

/**
 * IPv4 embedded in IPv6: IPv4-compatible (::/96, deprecated) is refused as a
 * whole; mapped, IPv4-translated, NAT64 (64:ff9b::/96 and the local-use
 * 64:ff9b:1::/48), 6to4, Teredo and ISATAP are judged by the IPv4 rules
 * applied to the IPv4 address they carry.
 */
test("addresses: IPv4-compatible IPv6 (::/96) is refused whatever it embeds", () => {
  for (const address of ["::7f00:1", "::127.0.0.1", "::a9fe:a9fe", "::a00:1", "::808:808", "::2", "0:0:0:0:0:0:c0a8:101"]) {
    assert.match(forbiddenAddressReason(address) ?? "allowed", /IPv4-compatible/, address);
  }
  assert.match(forbiddenAddressReason("::1")!, /loopback/);
  assert.match(forbiddenAddressReason("::")!, /unspecified/);
});

test("addresses: every other IPv4 embedding is judged by the IPv4 it carries", () => {
  const refused: Array<[string, RegExp]> = [
    ["::ffff:127.0.0.1", /loopback/],
    ["::ffff:0:a9fe:a9fe", /IPv4-translated.*169\.254\.169\.254.*link-local/],
    ["64:ff9b::7f00:1", /NAT64.*127\.0\.0\.1.*loopback/],
    ["64:ff9b::a9fe:a9fe", /NAT64.*link-local/],
    ["64:ff9b::a00:1", /NAT64.*10\.0\.0\.1.*private/],
    ["64:ff9b:1::7f00:1", /NAT64.*127\.0\.0\.1.*loopback/],
    ["64:ff9b:1:7f00:0:100::", /NAT64.*127\.0\.0\.1.*loopback/], // the /48 layout: 127.0 | u octet | 0.1
    ["64:ff9b:1:ffff:ffff::", /NAT64.*0\.0\.0\.0/], // only the /96 layout is valid here, and it carries 0.0.0.0
    ["2002:7f00:1::1", /6to4.*127\.0\.0\.1.*loopback/],
    ["2002:a9fe:a9fe::", /6to4.*link-local/],
    ["2002:c0a8:101:1::1", /6to4.*192\.168\.1\.1.*private/],
    ["2001:0:808:808::80ff:fffe", /Teredo.*client 127\.0\.0\.1.*loopback/], // client = NOT(80ff:fffe)
    ["2001:0:a00:1::f7f7:f7f7", /Teredo.*server 10\.0\.0\.1.*private/],
    ["2a00:1450::5efe:a9fe:a9fe", /ISATAP.*link-local/],
    ["2a00:1450::200:5efe:7f00:1", /ISATAP.*loopback/],
  ];
  for (const [address, reason] of refused) assert.match(forbiddenAddressReason(address) ?? "allowed", reason, address);
  // Public IPv4 behind a translator or tunnel is an ordinary destination (DNS64 networks reach every IPv4-only CDN so).
  for (const address of ["::ffff:8.8.8.8", "64:ff9b::808:808", "64:ff9b:1::808:808", "2002:808:808::1", "2001:0:808:808::f7f7:f7f7", "2606:4700:4700::1111"]) {
    assert.equal(forbiddenAddressReason(address), null, address);
  }
});

test("every IPv6 embedding of a forbidden IPv4 is refused by the fetcher before any connection", async () => {
  const p = trapPort;
  fakeDns["compat.test"] = ["::7f00:1"];
  fakeDns["nat64.test"] = ["64:ff9b::a9fe:a9fe"];
  fakeDns["sixtofour.test"] = ["2002:a00:1::1"];
  const urls = [
    `http://[::127.0.0.1]:${p}/x`,
    `http://[::7f00:1]:${p}/x`,
    "http://[::a9fe:a9fe]/latest/meta-data/",
    "http://[::169.254.169.254]/latest/meta-data/",
    "http://[::a00:1]/x",
    `http://[::ffff:0:7f00:1]:${p}/x`,
    `http://[64:ff9b::7f00:1]:${p}/x`,
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
    `http://[64:ff9b:1::7f00:1]:${p}/x`,
    `http://[2002:7f00:1::1]:${p}/x`,
    `http://[2001:0:808:808::80ff:fffe]:${p}/x`,
    `http://compat.test:${p}/x`,
    "http://nat64.test/latest/meta-data/",
    "http://sixtofour.test/x",
  ];
  await assertRefusedWithoutConnecting(urls);
});

/** Each URL is refused by the fetcher's address check, and no TCP connection is even attempted. */
async function assertRefusedWithoutConnecting(urls: string[]): Promise<void> {
  const f = fetcher();
  attempts.length = 0;
  trapConnections = 0;
  for (const url of urls) {
    await assert.rejects(
      f.fetch({ url, method: "GET", timeoutMs: 2000, maxBytes: 100 }),
      (error: unknown) => error instanceof FetchError && error.kind === "refused" && /refused to connect to/.test(error.message),
      url,
    );
  }
  f.close();
  assert.deepEqual(attempts, [], "no TCP connection may be attempted to a forbidden address");
  assert.equal(trapConnections, 0);
}
