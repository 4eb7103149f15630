/** explain(): each failure in a person's terms, with the documented exit code. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ClientError, NotFoundError, UsageError } from "../../src/client/errors.js";
import { explain } from "../../src/client/explain.js";

const request = (method: string, path: string, extra: Record<string, unknown> = {}) => ({ registry: "reg:5000", method, url: `https://reg:5000${path}`, ...extra });

test("a HEAD refused during a push is reported as the push it is part of", () => {
  const error = new ClientError("HEAD reg:5000/v2/team-a/app/blobs/sha256:x: HTTP 403 DENIED", {
    status: 403,
    errors: [{ code: "DENIED", message: "no" }],
    request: request("HEAD", "/v2/team-a/app/blobs/sha256:x", { user: "ci-robot", scopes: ["repository:team-a/app:pull,push"] }),
  });
  const explained = explain(error);
  assert.equal(explained.exitCode, 4);
  assert.match(explained.message, /^user ci-robot may not push to team-a\/app on reg:5000\n  the registry said: HTTP 403 DENIED: no$/);
});

test("401 without and with credentials; 404 codes; usage and not-found errors", () => {
  const anonymous = explain(new ClientError("x", { status: 401, request: request("GET", "/v2/a/tags/list") }));
  assert.equal(anonymous.exitCode, 4);
  assert.match(anonymous.message, /^authentication required to pull from a on reg:5000: run `ferry login reg:5000`/);
  const stale = explain(new ClientError("x", { status: 401, request: request("GET", "/token", { user: "alice", token: true }) }));
  assert.match(stale.message, /^reg:5000 refused the password of user alice/);
  const name = explain(new ClientError("x", { status: 404, errors: [{ code: "NAME_UNKNOWN" }], request: request("GET", "/v2/a/b/tags/list") }));
  assert.deepEqual([name.exitCode, name.message], [3, "repository a/b not found on reg:5000"]);
  assert.equal(explain(new UsageError("bad")).exitCode, 2);
  assert.equal(explain(new NotFoundError("gone")).exitCode, 3);
  assert.equal(explain(new Error("boom")).exitCode, 1);
});

test("TLS failures: plain HTTP behind an HTTPS URL, an untrusted certificate", () => {
  const plain = explain(new ClientError("GET https://reg:5000/v2/: wrong version number", {
    cause: Object.assign(new Error("ssl3_get_record:wrong version number"), { code: "ERR_SSL_WRONG_VERSION_NUMBER" }),
    request: request("GET", "/v2/"),
  }));
  assert.match(plain.message, /^reg:5000 answered plain HTTP to an HTTPS request: use --insecure/);
  const cert = explain(new ClientError("x", { cause: Object.assign(new Error("self-signed certificate"), { code: "DEPTH_ZERO_SELF_SIGNED_CERT" }), request: request("GET", "/v2/") }));
  assert.match(cert.message, /^the TLS certificate of reg:5000 is not trusted \(self-signed certificate\): pass its CA with --ca-file FILE/);
});
