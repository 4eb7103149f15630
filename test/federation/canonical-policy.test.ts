/**
 * The canonical URL form and the rules matched against it (docs/federation.md,
 * "Canonical URL form"): every spelling of one destination canonicalises to
 * one string, deny rules catch every spelling, `hosts:` matches host names
 * without a regex, and a deny rule also applies to the addresses a name
 * resolves to.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { canonicalizeUrl } from "../../src/federation/canonical-url.js";
import { UrlPolicy } from "../../src/federation/policy.js";
import { federationConfigSchema } from "../../src/federation/config.js";
import { SafeFetcher, FetchError } from "../../src/federation/fetcher.js";
import { startTestRegistry } from "../helpers/registry.js";
import { FakeSource, blob, parseErrors, pushForeignImage } from "./helpers.js";

const SCHEMES = ["https", "http"] as const;

function canonical(url: string): string {
  const result = canonicalizeUrl(url, SCHEMES);
  assert.ok(result.ok, `${url}: ${result.ok ? "" : result.reason}`);
  return result.url.href;
}

function policy(input: unknown): UrlPolicy {
  return new UrlPolicy(federationConfigSchema.parse(input));
}

/** The six spellings of http://127.0.0.1:5000/ from the issue. */
const SPELLINGS = [
  "HTTP://127.0.0.1:5000/x/layer.tar.gz",
  "http://127.1:5000/x/layer.tar.gz",
  "http://2130706433:5000/x/layer.tar.gz",
  "http://%31%32%37.0.0.1:5000/x/layer.tar.gz",
  "http://127.0.0.1.:5000/x/layer.tar.gz",
  "http://localhost:5000/x/layer.tar.gz",
];

test("canonical form: every spelling of 127.0.0.1 is one string", () => {
  for (const url of SPELLINGS) assert.equal(canonical(url), "http://127.0.0.1:5000/x/layer.tar.gz", url);
  for (const url of ["http://0x7f000001:5000/x/layer.tar.gz", "http://0177.0.0.1:5000/x/layer.tar.gz", "http://LocalHost.:5000/x/layer.tar.gz", "http://registry.localhost:5000/x/layer.tar.gz", "http://[::ffff:127.0.0.1]:5000/x/layer.tar.gz", "http://[::FFFF:7F00:1]:5000/x/layer.tar.gz"]) {
    assert.equal(canonical(url), "http://127.0.0.1:5000/x/layer.tar.gz", url);
  }
});

test("canonical form: scheme and host lower-case, no trailing dot, default port removed, unreserved characters decoded", () => {
  const cases: Array<[string, string]> = [
    ["HTTPS://CDN.Example.COM./a/b.tar.gz", "https://cdn.example.com/a/b.tar.gz"],
    ["https://cdn.example.com:443/a", "https://cdn.example.com/a"],
    ["http://cdn.example.com:80/a", "http://cdn.example.com/a"],
    ["http://cdn.example.com:0080/a", "http://cdn.example.com/a"],
    ["http://cdn.example.com:443/a", "http://cdn.example.com:443/a"],
    ["https://cdn.example.com:/a", "https://cdn.example.com/a"],
    ["https://cdn.example.com", "https://cdn.example.com/"],
    ["https://%63dn.example.com/%7Euser/%61%2fb?q=%41%2f", "https://cdn.example.com/~user/a%2Fb?q=A%2F"],
    ["https://cdn.example.com/a/./b/../c", "https://cdn.example.com/a/c"],
    ["https://cdn.example.com/public/%2e%2e/private/x", "https://cdn.example.com/private/x"],
    ["https://[2001:DB8:0:0:0:0:0:1]:8443/x", "https://[2001:db8::1]:8443/x"],
    ["https://cdn.example.com/x?a='b'", "https://cdn.example.com/x?a=%27b%27"],
  ];
  for (const [written, expected] of cases) {
    assert.equal(canonical(written), expected, written);
    assert.equal(canonical(expected), expected, `the canonical form of ${written} is a fixed point`);
  }
});

test("rules match the canonical form: a deny rule for 127.0.0.1 refuses all six spellings", () => {
  const p = policy({ rules: [{ match: "^https?://127\\.0\\.0\\.1:5000/", deny: true }] });
  for (const url of SPELLINGS) {
    const decision = p.decide(url);
    assert.equal(decision.allowed, false, url);
    assert.equal(decision.rule, "rules[0] (^https?:\\/\\/127\\.0\\.0\\.1:5000\\/)", url);
    assert.match(decision.allowed ? "" : decision.reason, /is denied by federation rule rules\[0\]/);
    if (url !== "http://127.0.0.1:5000/x/layer.tar.gz") {
      assert.match(decision.allowed ? "" : decision.reason, /canonical form http:\/\/127\.0\.0\.1:5000\/x\/layer\.tar\.gz/, url);
    }
  }
  assert.equal(p.decide("http://127.0.0.2:5000/x").allowed, true);
});

test("rules match the canonical form: the docs' `^http://` deny rule catches HTTP://", () => {
  const p = policy({ rules: [{ match: "^https://cdn\\.example\\.com/", serve: "proxy" }, { match: "^http://", deny: true }] });
  assert.equal(p.decide("HTTP://cdn.example.com/x").allowed, false);
  assert.equal(p.decide("Http://cdn.example.com/x").allowed, false);
  const allowed = p.decide("HTTPS://CDN.EXAMPLE.COM:443/x");
  assert.ok(allowed.allowed && allowed.serve === "proxy");
  assert.equal(allowed.url, "HTTPS://CDN.EXAMPLE.COM:443/x");
  assert.equal(allowed.canonical, "https://cdn.example.com/x", "an allowed decision carries the canonical URL: what is fetched or redirected to");
});

test("hosts: exact names, *.suffix wildcards and IP literals, matched on the canonical host", () => {
  const p = policy({
    rules: [
      { hosts: ["*.cdn.example.com"], serve: "proxy" },
      { hosts: ["downloads.example.com", "[2001:db8::1]"], serve: "redirect" },
      { hosts: ["LOCALHOST", "10.0.0.1"], deny: true },
    ],
    default: { deny: true },
  });
  const serve = (url: string) => {
    const d = p.decide(url);
    return d.allowed ? d.serve : `refused by ${d.rule}`;
  };
  assert.equal(serve("https://a.cdn.example.com/x"), "proxy");
  assert.equal(serve("https://A.B.CDN.Example.com./x"), "proxy");
  assert.equal(serve("https://cdn.example.com/x"), "refused by default", "*.suffix does not match the suffix itself");
  assert.equal(serve("https://evilcdn.example.com/x"), "refused by default");
  assert.equal(serve("https://a.cdn.example.com.evil.org/x"), "refused by default");
  assert.equal(serve("https://downloads.example.com:8443/x"), "redirect");
  assert.equal(serve("https://sub.downloads.example.com/x"), "refused by default");
  assert.equal(serve("https://[2001:db8:0::1]/x"), "redirect");
  assert.equal(serve("http://2130706433:5000/x"), "refused by rules[2] (hosts: 127.0.0.1, 10.0.0.1)");
  assert.equal(serve("http://localhost/x"), "refused by rules[2] (hosts: 127.0.0.1, 10.0.0.1)");
  assert.equal(serve("http://012.0.0.1/x"), "refused by rules[2] (hosts: 127.0.0.1, 10.0.0.1)");
});

test("hosts and match together: both must match", () => {
  const p = policy({ rules: [{ hosts: ["cdn.example.com"], match: "\\.tar\\.gz$", serve: "proxy" }] });
  const hit = p.decide("https://cdn.example.com/a.tar.gz");
  assert.ok(hit.allowed && hit.serve === "proxy");
  assert.equal(hit.rule, "rules[0] (\\.tar\\.gz$ hosts: cdn.example.com)");
  const wrongPath = p.decide("https://cdn.example.com/a.zip");
  assert.ok(wrongPath.allowed && wrongPath.rule === "default");
  const wrongHost = p.decide("https://other.example.com/a.tar.gz");
  assert.ok(wrongHost.allowed && wrongHost.rule === "default");
});

test("config: hosts patterns are validated; a rule needs match or hosts", () => {
  assert.throws(() => federationConfigSchema.parse({ rules: [{ hosts: ["https://cdn.example.com/"] }] }));
  assert.throws(() => federationConfigSchema.parse({ rules: [{ hosts: [] }] }));
  assert.throws(() => policy({ rules: [{ serve: "proxy" }] }), /rules\[0\] needs `match` or `hosts`/);
  assert.throws(() => policy({ rules: [{ hosts: ["1.2.3.999"] }] }), /rules\[0\]\.hosts: "1\.2\.3\.999"/);
});

test("a deny rule also refuses a name that resolves to a denied address", () => {
  const p = policy({ rules: [{ match: "^https?://127\\.0\\.0\\.1[:/]", deny: true }, { hosts: ["*.test"], serve: "proxy" }] });
  assert.equal(p.decide("http://alias.test:5000/x").allowed, true, "the name itself is allowed");
  const refused = p.refusalForAddress("http://alias.test:5000/x", "127.0.0.1");
  assert.ok(refused);
  assert.match(refused.reason, /resolves to 127\.0\.0\.1, and http:\/\/127\.0\.0\.1:5000\/x is denied by federation rule rules\[0\]/);
  assert.ok(p.refusalForAddress("http://alias.test:5000/x", "::ffff:127.0.0.1"));
  assert.equal(p.refusalForAddress("http://alias.test:5000/x", "127.0.0.2"), null);
});

/** A loopback listener that counts connections: a denied destination must never see one. */
let trap: Server;
let trapConnections = 0;
let trapPort = 0;
before(async () => {
  trap = createServer((_req, res) => res.end("trapped"));
  trap.on("connection", () => trapConnections++);
  await new Promise<void>((resolve) => trap.listen(0, "127.0.0.1", () => resolve()));
  trapPort = (trap.address() as AddressInfo).port;
});
after(() => new Promise<void>((resolve) => trap.close(() => resolve())));

test("the fetcher applies the rules too: every spelling, and names resolving to a denied address, with allowPrivateNetworks on", async () => {
  const p = policy({ rules: [{ match: "^https?://127\\.0\\.0\\.1[:/]", deny: true }] });
  const f = new SafeFetcher({
    schemes: SCHEMES,
    allowPrivateNetworks: true,
    policy: p,
    resolve: async (hostname) => {
      if (hostname === "alias.test") return [{ address: "127.0.0.1", family: 4 }];
      throw new Error(`unknown test host ${hostname}`);
    },
  });
  trapConnections = 0;
  const urls = [...SPELLINGS.map((u) => u.replace(":5000", `:${trapPort}`)), `http://alias.test:${trapPort}/x`];
  for (const url of urls) {
    await assert.rejects(
      f.fetch({ url, method: "GET", timeoutMs: 2000, maxBytes: 100 }),
      (error: unknown) => error instanceof FetchError && error.kind === "denied" && /denied by federation rule rules\[0\]/.test(error.message),
      url,
    );
  }
  assert.equal(trapConnections, 0);
  // The control: the same fetcher reaches the trap when no rule denies it.
  const open = new SafeFetcher({ schemes: SCHEMES, allowPrivateNetworks: true, policy: policy({}) });
  const response = await open.fetch({ url: `http://LOCALHOST:${trapPort}/x`, method: "GET", timeoutMs: 2000, maxBytes: 100 });
  response.body.resume();
  assert.equal(response.url, `http://127.0.0.1:${trapPort}/x`);
  assert.equal(trapConnections, 1);
  f.close();
  open.close();
});

test("push: the six spellings are each refused by the deny rule with 400 MANIFEST_INVALID, and change nothing", async (t) => {
  const source = await new FakeSource().start();
  const other = await new FakeSource("127.0.0.2").start();
  t.after(() => source.close());
  t.after(() => other.close());
  const p = source.port;
  const deny = `^https?://127\\.0\\.0\\.1:${p}/`;
  const r = await startTestRegistry({
    federation: {
      proxy: { allowPrivateNetworks: true },
      verify: { mode: "head" },
      rules: [{ match: deny, deny: true }, { hosts: ["127.0.0.2"], serve: "proxy" }],
    },
  });
  t.after(() => r.close());
  const good = blob(30);
  const first = await pushForeignImage(r.url, "app", "v1", [{ ...good, urls: [other.put("/good", good.bytes)] }]);
  assert.equal(first.status, 201, first.body);

  const layer = blob(40);
  source.put("/x/layer.tar.gz", layer.bytes);
  const rule = `rules[0] (${new RegExp(deny).source})`;
  for (const written of SPELLINGS) {
    const url = written.replace(":5000", `:${p}`);
    const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [url] }]);
    assert.equal(pushed.status, 400, `${url}: ${pushed.body}`);
    const [error, ...rest] = parseErrors(pushed.body);
    assert.equal(rest.length, 0);
    assert.equal(error!.code, "MANIFEST_INVALID");
    assert.equal(error!.detail?.url, url);
    assert.equal(error!.detail?.rule, rule, url);
    assert.match(String(error!.detail?.reason), /is denied by federation rule/);
  }
  const tagged = await fetch(`${r.url}/v2/app/manifests/v1`, { headers: { Accept: "application/vnd.oci.image.manifest.v1+json" } });
  assert.equal(tagged.headers.get("docker-content-digest"), first.digest, "the tag still points at the manifest pushed before");
  const marks = await r.registry.deps.meta.listForeignLayers("app");
  assert.deepEqual(marks.map((m) => m.digest), [good.digest], "no mark for the refused layer");
  assert.equal(source.requests.length, 0, "a refused URL is never fetched, not even for verification");
  assert.equal(other.requests.length, 1, "the control layer was verified (HEAD)");
});

test("push: the docs' `^http://` deny rule refuses HTTP://", async (t) => {
  const r = await startTestRegistry({ federation: { rules: [{ match: "^https://cdn\\.example\\.com/", serve: "redirect" }, { match: "^http://", deny: true }] } });
  t.after(() => r.close());
  const layer = blob(40);
  for (const url of ["HTTP://cdn.example.com/x", "hTTp://cdn.example.com/x"]) {
    const pushed = await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: [url] }]);
    assert.equal(pushed.status, 400, pushed.body);
    assert.equal(parseErrors(pushed.body)[0]!.detail?.rule, "rules[1] (^http:\\/\\/)");
  }
  assert.equal((await pushForeignImage(r.url, "app", "v1", [{ ...layer, urls: ["HTTPS://CDN.example.com/x"] }])).status, 201);
});
