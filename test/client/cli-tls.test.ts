/**
 * TLS flags: `--tls-verify=false` (HTTPS without certificate checks, not
 * plain HTTP), `--ca-file` (trust a private CA), `--cert-file`/`--key-file`
 * (client certificates), against an HTTPS registry stub on 127.0.0.1 with
 * certificates made by openssl for the test.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { join } from "node:path";
import { skipUnless } from "../helpers/tools.js";
import { ferry, tempDir } from "./harness.js";

/** A CA, a server certificate for IP 127.0.0.1 and a client certificate (CN ferry-client), all EC P-256. */
function makeCertificates(dir: string): void {
  const run = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
  const key = (name: string) => run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${name}.key`);
  key("ca");
  run("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=ferry test CA", "-days", "2", "-out", "ca.pem");
  for (const [name, subject, ext] of [
    ["server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1"],
    ["client", "/CN=ferry-client", "extendedKeyUsage=clientAuth"],
  ] as const) {
    key(name);
    run("req", "-new", "-key", `${name}.key`, "-subj", subject, "-out", `${name}.csr`);
    execFileSync("sh", ["-c", `printf '%s\\n' '${ext}' > ${name}.ext`], { cwd: dir });
    run("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", `${name}.ext`, "-out", `${name}.pem`);
  }
}

describe("TLS flags against an HTTPS registry on loopback", { skip: skipUnless("openssl") }, () => {
  let dir: string;
  let server: Server;
  let host: string;

  before(async () => {
    dir = await tempDir("ferry-tls-");
    makeCertificates(dir);
    server = createServer(
      { key: await readFile(join(dir, "server.key")), cert: await readFile(join(dir, "server.pem")), ca: await readFile(join(dir, "ca.pem")), requestCert: true, rejectUnauthorized: false },
      (req, res) => {
        const headers = { "content-type": "application/json", "docker-distribution-api-version": "registry/2.0" };
        if (req.url === "/v2/") return void res.writeHead(200, headers).end("{}");
        // Who the client proved to be, if anyone: the tag list names it.
        const socket = req.socket as TLSSocket;
        const who = socket.authorized ? String(socket.getPeerCertificate().subject?.CN ?? "?") : "anonymous";
        res.writeHead(200, headers).end(JSON.stringify({ name: "app", tags: [who] }));
      },
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  test("an untrusted certificate is explained, with both ways out", async () => {
    const result = await ferry(["tags", "--tls-verify=true", `${host}/app`]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /the TLS certificate of 127\.0\.0\.1:\d+ is not trusted .*: pass its CA with --ca-file FILE, or use --tls-verify=false if you trust this network/);
  });

  test("--tls-verify=false speaks HTTPS without checking the certificate", async () => {
    const result = await ferry(["tags", "--tls-verify=false", `${host}/app`]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), "anonymous");
  });

  test("--ca-file trusts a private CA; --cert-file/--key-file present a client certificate", async () => {
    const ca = await ferry(["tags", "--ca-file", join(dir, "ca.pem"), `${host}/app`]);
    assert.equal(ca.code, 0, ca.stderr);
    const mutual = await ferry(["tags", "--ca-file", join(dir, "ca.pem"), "--cert-file", join(dir, "client.pem"), "--key-file", join(dir, "client.key"), `${host}/app`]);
    assert.equal(mutual.code, 0, mutual.stderr);
    assert.equal(mutual.stdout.trim(), "ferry-client");
  });

  test("contradictory or incomplete TLS flags are usage errors", async () => {
    assert.equal((await ferry(["tags", "--insecure", "--tls-verify=false", `${host}/app`])).code, 2);
    assert.equal((await ferry(["tags", "--cert-file", join(dir, "client.pem"), `${host}/app`])).code, 2);
    assert.equal((await ferry(["tags", "--ca-file", join(dir, "missing.pem"), `${host}/app`])).code, 2);
    assert.equal((await ferry(["tags", "--tls-verify=maybe", `${host}/app`])).code, 2);
  });
});
