/**
 * Foreign-layer URLs are validated as written against RFC 3986 before any
 * parser gets to repair them: URLs without a host, with backslashes, spaces,
 * non-ASCII or other characters a URL may not contain are refused at
 * manifest PUT with 400 MANIFEST_INVALID, and a refused push changes nothing.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { checkUrlSyntax } from "../../src/federation/url-syntax.js";
import { startTestRegistry } from "../helpers/registry.js";
import { FakeSource, blob, parseErrors, pushForeignImage } from "./helpers.js";

/** The issue's four, and their relatives. Each: [url, what the reason must say]. */
const MALFORMED: Array<[string, RegExp]> = [
  ["http:///x/layer.tar.gz", /has no host/],
  ["http:x/layer.tar.gz", /has no host/],
  ["https:////example.com/x", /has no host/],
  ["https://example.com\\evil/x", /character RFC 3986 does not allow in a URL: "\\" at position 19/],
  ["http:/example.com/x", /has no host/],
  ["https://:443/x", /has no host/],
  ["https://./x", /has no host/],
  ["https://a..example.com/x", /empty label/],
  ["https://exa mple.com/x", /character RFC 3986 does not allow.*U\+0020/],
  ["https://example.com/x y", /character RFC 3986 does not allow/],
  ["https://example.com/x\ty", /U\+0009/],
  ["https://exämple.com/x", /character RFC 3986 does not allow.*"ä"/],
  ["https://example.com/%zz", /percent sign/],
  ["https://example.com/[x]", /"\[" is only allowed around an IPv6 address/],
  ["https://ex%2fample.com/x", /host contains %2f/],
  ["https://ex!ample.com/x", /host contains "!"/],
  ["https://[::1%25eth0]/x", /IPv6/],
  ["https://[v1.abc]/x", /IPv6/],
  ["https://[::1]x/x", /port/],
  ["https://example.com:99999/x", /port/],
  ["https://example.com:8a/x", /port/],
  ["https://1.2.3.256/x", /invalid host/],
  ["https://example.com:443@evil.example/x", /userinfo/],
  ["https://example.com/x#frag", /fragment/],
  ["//example.com/x", /not an absolute URL/],
];

test("unit: each malformed URL is refused with a reason, as written", () => {
  for (const [url, reason] of MALFORMED) {
    const problem = checkUrlSyntax(url, ["https", "http"]);
    assert.ok(problem, `${JSON.stringify(url)} must be refused`);
    assert.match(problem.reason, reason, url);
  }
  for (const url of ["https://cdn.example.com/a/b.tar.gz?sig=a%2Fb&x=1", "http://127.0.0.1:5000/x", "https://[2001:db8::1]:8443/x", "HTTPS://CDN.EXAMPLE.COM./x", "https://a_b.example.com/~u/(x)!$&'*+,;=:@/"]) {
    assert.equal(checkUrlSyntax(url, ["https", "http"]), null, url);
  }
});

test("push: each malformed URL is a 400 MANIFEST_INVALID naming the URL, and nothing is stored or fetched", async (t) => {
  const source = await new FakeSource().start();
  t.after(() => source.close());
  const layer = blob(50);
  source.put("/x/layer.tar.gz", layer.bytes);
  const r = await startTestRegistry({ federation: { proxy: { allowPrivateNetworks: true }, verify: { mode: "fetch" }, default: { serve: "proxy" } } });
  t.after(() => r.close());
  const issue = ["http:///x/layer.tar.gz", "http:x/layer.tar.gz", "https:////example.com/x", "https://example.com\\evil/x"];
  // Also: the source's own address, spelled so that a repairing parser would reach it.
  const repaired = [`http:\\\\127.0.0.1:${source.port}/x/layer.tar.gz`, `http:/127.0.0.1:${source.port}/x/layer.tar.gz`, `http:127.0.0.1:${source.port}/x/layer.tar.gz`];
  for (const [i, url] of [...issue, ...repaired].entries()) {
    const pushed = await pushForeignImage(r.url, "app", `t${i}`, [{ ...layer, urls: [url] }]);
    assert.equal(pushed.status, 400, `${url}: ${pushed.body}`);
    const [error, ...rest] = parseErrors(pushed.body);
    assert.equal(rest.length, 0);
    assert.equal(error!.code, "MANIFEST_INVALID");
    assert.equal(error!.detail?.url, url);
    assert.equal(error!.detail?.rule, "syntax");
    assert.equal(error!.detail?.digest, layer.digest);
    assert.ok(error!.message.includes(url), error!.message);
    assert.equal((await fetch(`${r.url}/v2/app/manifests/t${i}`)).status, 404, `${url}: nothing may be stored`);
  }
  assert.deepEqual(await r.registry.deps.meta.listForeignLayers("app"), [], "no foreign-layer mark");
  assert.equal(source.requests.length, 0, "nothing fetched");
  // The control: the same layer with a well-formed URL is accepted (and verified).
  const ok = await pushForeignImage(r.url, "app", "good", [{ ...layer, urls: [source.url("/x/layer.tar.gz")] }]);
  assert.equal(ok.status, 201, ok.body);
});
