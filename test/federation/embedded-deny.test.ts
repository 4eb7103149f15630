/**
 * A deny rule for an IPv4 host also refuses the IPv6 spellings that carry
 * that address (IPv4-compatible ::/96, mapped, NAT64, 6to4, Teredo, ISATAP):
 * on a network that translates them they reach the denied host, and the
 * address rules already judge them by the IPv4 inside.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { UrlPolicy } from "../../src/federation/policy.js";
import { federationConfigSchema } from "../../src/federation/config.js";

const policy = new UrlPolicy(
  federationConfigSchema.parse({
    proxy: { allowPrivateNetworks: true },
    rules: [{ hosts: ["127.0.0.3"], deny: true }, { match: "^http://198\\.51\\.100\\.7/", deny: true }],
  }),
);

test("IPv6 spellings of a denied IPv4 host are denied", () => {
  for (const url of [
    "http://[::127.0.0.3]/x",
    "http://[::ffff:127.0.0.3]/x",
    "http://[64:ff9b::7f00:3]/x",
    "http://[2002:7f00:3::]/x",
    "http://[::ffff:0:7f00:3]/x",
    "http://[fe80::5efe:7f00:3]/x",
    "http://[64:ff9b::c633:6407]/x",
  ]) {
    const decision = policy.decide(url);
    assert.equal(decision.allowed, false, `${url} must be refused`);
    if (!decision.allowed) assert.match(decision.reason, /carries the IPv4 address|denied by federation rule/);
  }
});

test("other IPv6 addresses, and IPv6 addresses carrying other IPv4 hosts, are judged as usual", () => {
  for (const url of ["http://[::127.0.0.4]/x", "http://[64:ff9b::7f00:4]/x", "http://[2001:db8::1]/x", "http://127.0.0.4/x"]) {
    assert.equal(policy.decide(url).allowed, true, `${url} is not denied by these rules`);
  }
});
