/** Unit tests: URL syntax and policy, address classification, signer, glob, verifying streams. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { checkUrlSyntax } from "../../src/federation/url-syntax.js";
import { UrlPolicy } from "../../src/federation/policy.js";
import { federationConfigSchema } from "../../src/federation/config.js";
import { forbiddenAddressReason } from "../../src/federation/address.js";
import { signUrl, verifySignedUrl } from "../../src/federation/signer.js";
import { globToRegExp } from "../../src/federation/service.js";
import { ContentMismatchError, RangeSlice, VerifyingStream } from "../../src/federation/verify-stream.js";
import { blob } from "./helpers.js";

function policy(input: unknown): UrlPolicy {
  return new UrlPolicy(federationConfigSchema.parse(input));
}

test("URL syntax: absolute http(s) URLs without userinfo or fragment", () => {
  assert.equal(checkUrlSyntax("https://cdn.example.com/layer.tar.gz", ["https", "http"]), null);
  assert.match(checkUrlSyntax("/relative/path", ["https"])!.reason, /not an absolute URL/);
  assert.match(checkUrlSyntax("ftp://example.com/x", ["https", "http"])!.reason, /scheme "ftp"/);
  assert.match(checkUrlSyntax("http://example.com/x", ["https"])!.reason, /scheme "http"; allowed: https/);
  assert.match(checkUrlSyntax("https://user:pw@example.com/x", ["https"])!.reason, /userinfo/);
  assert.match(checkUrlSyntax("https://user@example.com/x", ["https"])!.reason, /userinfo/);
  assert.match(checkUrlSyntax("https://example.com/x#frag", ["https"])!.reason, /fragment/);
  assert.match(checkUrlSyntax("https://example.com/x#", ["https"])!.reason, /fragment/);
});

test("policy: first matching rule wins and decides the serve mode", () => {
  const p = policy({
    rules: [
      { match: "^https://mcr\\.microsoft\\.com/", serve: "redirect" },
      { match: "^https://cdn\\.example\\.com/private/", deny: true },
      { match: "^https://cdn\\.example\\.com/", serve: "proxy", cache: true },
      { match: "^http://", deny: true },
    ],
  });
  const mcr = p.decide("https://mcr.microsoft.com/v2/windows/blobs/sha256:1");
  assert.equal(mcr.allowed && mcr.serve, "redirect");
  assert.equal(mcr.rule, "rules[0] (^https:\\/\\/mcr\\.microsoft\\.com\\/)");
  const denied = p.decide("https://cdn.example.com/private/x");
  assert.equal(denied.allowed, false);
  assert.match(denied.allowed ? "" : denied.reason, /denied by federation rule rules\[1\]/);
  const cdn = p.decide("https://cdn.example.com/pub/x");
  assert.ok(cdn.allowed && cdn.serve === "proxy" && cdn.cache === true);
  assert.equal(p.decide("http://anything.example/x").allowed, false);
  const other = p.decide("https://elsewhere.example/x");
  assert.ok(other.allowed && other.serve === "error" && other.rule === "default");
});

test("policy: `match` is a regex over the whole URL, not just the host", () => {
  const p = policy({ rules: [{ match: "\\.tar\\.gz$", serve: "proxy" }] });
  const hit = p.decide("https://a.example/layer.tar.gz");
  assert.ok(hit.allowed && hit.serve === "proxy");
  const miss = p.decide("https://a.example/layer.tar.gz?x=1");
  assert.ok(miss.allowed && miss.serve === "error");
});

test("policy: default deny makes the rules an allow-list", () => {
  const p = policy({ rules: [{ match: "^https://ok\\.example/", serve: "redirect" }], default: { deny: true } });
  assert.equal(p.decide("https://ok.example/x").allowed, true);
  const refused = p.decide("https://other.example/x");
  assert.equal(refused.allowed, false);
  assert.equal(refused.rule, "default");
  assert.match(refused.allowed ? "" : refused.reason, /matches no federation rule/);
});

test("policy: scheme list applies before rules (https-only switch)", () => {
  const p = policy({ schemes: ["https"], rules: [{ match: ".*", serve: "proxy" }] });
  const refused = p.decide("http://cdn.example/x");
  assert.equal(refused.allowed, false);
  assert.equal(refused.rule, "syntax");
});

test("config: an invalid regex and a short signing secret are refused with a message", () => {
  assert.throws(() => federationConfigSchema.parse({ rules: [{ match: "([" }] }), /not a valid regular expression/);
  assert.throws(() => federationConfigSchema.parse({ default: { serve: "redirect", sign: { secret: "short" } } }), /at least 16/);
  const parsed = federationConfigSchema.parse({ proxy: { cacheMaxBytes: "10GiB", cacheTtl: "168h" } });
  assert.equal(parsed.proxy.cacheMaxBytes, 10 * 1024 ** 3);
  assert.equal(parsed.proxy.cacheTtl, 168 * 3_600_000);
});

test("addresses: every forbidden range is refused, public unicast is allowed", () => {
  const forbidden: Array<[string, RegExp]> = [
    ["127.0.0.1", /loopback/],
    ["127.255.255.254", /loopback/],
    ["::1", /loopback/],
    ["10.1.2.3", /private/],
    ["172.16.0.1", /private/],
    ["192.168.1.1", /private/],
    ["169.254.169.254", /link-local/],
    ["fe80::1", /link-local/],
    ["100.64.0.1", /carrier-grade NAT/],
    ["fc00::1", /unique-local/],
    ["fd12:3456::1", /unique-local/],
    ["224.0.0.1", /multicast/],
    ["ff02::1", /multicast/],
    ["0.0.0.0", /unspecified/],
    ["::", /unspecified/],
    ["255.255.255.255", /broadcast/],
    ["::ffff:127.0.0.1", /loopback/],
    ["::ffff:7f00:1", /loopback/],
    ["::ffff:a9fe:a9fe", /link-local/],
    ["::ffff:10.0.0.1", /private/],
    ["64:ff9b::a00:1", /NAT64/],
    ["2002:7f00:1::", /6to4/],
  ];
  for (const [address, reason] of forbidden) {
    assert.match(forbiddenAddressReason(address) ?? "allowed", reason, address);
  }
  for (const address of ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]) {
    assert.equal(forbiddenAddressReason(address), null, address);
  }
});

test("addresses: non-canonical IPv4 forms reach the checker normalised by the URL parser", () => {
  for (const written of ["2130706433", "0x7f000001", "0177.0.0.1", "017700000001", "127.1", "0x7f.1", "127.0.0.1."]) {
    const host = new URL(`http://${written}/`).hostname;
    assert.equal(host, "127.0.0.1", written);
    assert.match(forbiddenAddressReason(host)!, /loopback/, written);
  }
  assert.match(forbiddenAddressReason(new URL("http://[::ffff:169.254.169.254]/").hostname)!, /link-local/);
  assert.match(forbiddenAddressReason(new URL("http://0/").hostname)!, /unspecified/);
});

test("signer: signed URLs verify, and tampering or expiry is detected", () => {
  const secret = "0123456789abcdef0123";
  const now = 1_700_000_000_000;
  const signed = signUrl("https://cdn.example.com/layer.tar.gz?v=1", secret, 15 * 60_000, now);
  assert.match(signed, /^https:\/\/cdn\.example\.com\/layer\.tar\.gz\?v=1&ferry-expires=1700000900&ferry-signature=[A-Za-z0-9_-]{43}$/);
  assert.deepEqual(verifySignedUrl(signed, secret, now + 60_000), { valid: true, expires: 1_700_000_900 });
  assert.deepEqual(verifySignedUrl(signed, secret, now + 16 * 60_000), { valid: false, reason: "expired" });
  assert.deepEqual(verifySignedUrl(signed, "another-secret-0000", now), { valid: false, reason: "bad signature" });
  assert.deepEqual(verifySignedUrl(signed.replace("layer", "other"), secret, now), { valid: false, reason: "bad signature" });
  assert.deepEqual(verifySignedUrl(signed.replace("1700000900", "1800000900"), secret, now), { valid: false, reason: "bad signature" });
  const noQuery = signUrl("https://cdn.example.com/x", secret, 1000, now);
  assert.match(noQuery, /\/x\?ferry-expires=\d+&ferry-signature=/);
  assert.equal(verifySignedUrl(noQuery, secret, now).valid, true);
});

test("private repository patterns: * stays within a component, ** crosses them", () => {
  assert.equal(globToRegExp("secret/*").test("secret/app"), true);
  assert.equal(globToRegExp("secret/*").test("secret/team/app"), false);
  assert.equal(globToRegExp("secret/**").test("secret/team/app"), true);
  assert.equal(globToRegExp("a.b/*").test("axb/c"), false);
});

async function collect(stream: Readable, transform: NodeJS.ReadWriteStream): Promise<{ bytes: Buffer; error: unknown }> {
  const chunks: Buffer[] = [];
  let error: unknown = null;
  await pipeline(
    stream,
    transform,
    new Writable({
      write(chunk: Buffer, _e, cb) {
        chunks.push(chunk);
        cb();
      },
    }),
  ).catch((e: unknown) => (error = e));
  return { bytes: Buffer.concat(chunks), error };
}

function chunked(bytes: Buffer, size: number): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) parts.push(bytes.subarray(i, i + size));
  return Readable.from(parts);
}

test("verifying stream: passes correct bytes, and holds the last chunk back on a digest or size mismatch", async () => {
  const layer = blob(10_000);
  const ok = await collect(chunked(layer.bytes, 1000), new VerifyingStream(layer.digest, layer.size));
  assert.equal(ok.error, null);
  assert.deepEqual(ok.bytes, layer.bytes);

  const wrong = Buffer.from(layer.bytes);
  wrong[0] = wrong[0]! ^ 1;
  const bad = await collect(chunked(wrong, 1000), new VerifyingStream(layer.digest, layer.size));
  assert.ok(bad.error instanceof ContentMismatchError);
  assert.match((bad.error as Error).message, /digest mismatch/);
  assert.ok(bad.bytes.length < layer.size, "a client must never receive every byte of a mismatching blob");

  const short = await collect(chunked(layer.bytes.subarray(0, 9000), 1000), new VerifyingStream(layer.digest, layer.size));
  assert.match((short.error as Error).message, /sent 9000 bytes, the descriptor declares 10000/);
  const long = await collect(chunked(Buffer.concat([layer.bytes, Buffer.from("x")]), 1000), new VerifyingStream(layer.digest, layer.size));
  assert.match((long.error as Error).message, /more than the 10000 bytes/);
});

test("range slice: passes exactly the inclusive range", async () => {
  const layer = blob(10_000);
  for (const [start, end] of [[0, 0], [0, 9999], [999, 1000], [2500, 7499], [9999, 9999]] as const) {
    const out = await collect(chunked(layer.bytes, 1000), new RangeSlice({ start, end }));
    assert.deepEqual(out.bytes, layer.bytes.subarray(start, end + 1), `${start}-${end}`);
  }
});
