/**
 * Client commands: login, logout, push, pull, copy, inspect, manifest, digest,
 * config, tags, catalog, tag, untag, rm, referrers, blob get.
 *
 * This module only declares the commands and their flags; the work lives in
 * client-actions.ts, loaded when a command runs, so `ferry --help` and the
 * other command groups never load the client library. Results go to stdout
 * (a digest, a list, JSON with --json); progress, notices and registry
 * warnings go to stderr. Exit codes: 0 ok, 1 failure, 2 usage, 3 not found,
 * 4 authentication or permission (docs/client.md "Exit codes").
 */
import type { Command } from "commander";
import type * as Actions from "./client-actions.js";

export const CLIENT_COMMANDS = [
  "login",
  "logout",
  "push",
  "pull",
  "copy",
  "inspect",
  "manifest",
  "digest",
  "config",
  "tags",
  "catalog",
  "tag",
  "untag",
  "rm",
  "referrers",
  "blob",
] as const;

type ActionName = { [K in keyof typeof Actions]: (typeof Actions)[K] extends (...args: never[]) => Promise<void> ? K : never }[keyof typeof Actions];

/** Runs an action from client-actions.ts with the command's positional arguments and flags. */
function run(name: ActionName) {
  return async (...args: unknown[]): Promise<void> => {
    const command = args[args.length - 1] as Command;
    const positional = args.slice(0, -2) as string[];
    const actions = await import("./client-actions.js");
    await actions.runAction(() => (actions[name] as (...a: unknown[]) => Promise<void>)(...positional, command.opts()), command.opts());
  };
}

/** How to reach a registry: TLS, plain HTTP, credentials. */
function registryFlags(command: Command): Command {
  return command
    .option("--insecure", "plain HTTP (loopback hosts use it unless a TLS flag is given)")
    .option("--tls-verify <bool>", "true: HTTPS with certificate checks; false: HTTPS without them (either way HTTPS, also on loopback)")
    .option("--ca-file <file>", "trust this CA (PEM) for HTTPS")
    .option("--cert-file <file>", "client certificate (PEM) for mutual TLS")
    .option("--key-file <file>", "client certificate key (PEM)")
    .option("--creds <user:password>", "credentials for this command instead of the stored ones")
    .option("--authfile <file>", "Docker config.json to read credentials from (default $DOCKER_CONFIG/config.json)");
}

function transferFlags(command: Command): Command {
  return registryFlags(command)
    .option("--src-creds <user:password>", "credentials for the source registry")
    .option("--dest-creds <user:password>", "credentials for the destination registry")
    .option("--platform <os/arch[/variant]|all>", "one platform of an index, or all (default: all; this machine's for docker-archive)")
    .option("-j, --jobs <n>", "parallel layer transfers", "4")
    .option("--include-foreign", "upload foreign layers' bytes as regular layers (changes the manifest digest)")
    .option("-q, --quiet", "no progress output")
    .option("--json", "JSON lines on stdout (events, then a result or an error)");
}

export function registerClientCommands(program: Command): void {
  const add = (name: string) => program.command(name).exitOverride();

  registryFlags(
    add("login")
      .description("check credentials against a registry and store them (Docker config.json or its credential helper); asks on a terminal")
      .argument("<registry>", "host[:port]")
      .option("-u, --username <user>", "user name (asked on a terminal when missing)")
      .option("-p, --password <password>", "password (insecure: visible to other users; prefer --password-stdin)")
      .option("--password-stdin", "read the password from stdin"),
  ).action(run("login"));

  add("logout")
    .description("remove stored credentials for a registry")
    .argument("<registry>", "host[:port]")
    .option("--authfile <file>", "Docker config.json to edit")
    .action(run("logout"));

  transferFlags(
    add("push")
      .description("push an image from a layout or archive to a registry")
      .argument("<source>", "oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]")
      .argument("<reference>", "[docker://]host[:port]/repository[:tag]"),
  ).action(run("push"));

  transferFlags(
    add("pull")
      .description("pull an image from a registry into a layout or archive")
      .argument("<reference>", "[docker://]host[:port]/repository[:tag|@digest]")
      .argument("<destination>", "oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]"),
  ).action(run("pull"));

  transferFlags(
    add("copy")
      .description("copy an image between registries, layouts and archives, streaming; mounts blobs within one registry")
      .argument("<source>", "docker://host/repo:tag, oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE")
      .argument("<destination>", "docker://host/repo:tag, oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE"),
  ).action(run("copy"));

  registryFlags(
    add("inspect")
      .description("show an image's manifest, config and layers (sizes, foreign URLs)")
      .argument("<reference>", "[docker://]host[:port]/repository[:tag|@digest]")
      .option("--raw", "print the manifest bytes exactly as the registry serves them")
      .option("--json", "a JSON document with the manifest as stored"),
  ).action(run("inspect"));

  registryFlags(
    add("manifest")
      .description("print the manifest bytes exactly as stored")
      .argument("<reference>", "[docker://]host[:port]/repository[:tag|@digest]")
      .option("--platform <os/arch[/variant]>", "the manifest of this platform from an index"),
  ).action(run("manifest"));

  registryFlags(
    add("digest")
      .description("print the digest of an image's manifest (no download)")
      .argument("<reference>", "[docker://]host[:port]/repository[:tag|@digest]")
      .option("--platform <os/arch[/variant]>", "the digest of this platform's manifest in an index"),
  ).action(run("digest"));

  registryFlags(
    add("config")
      .description("print an image's config blob as stored")
      .argument("<reference>", "[docker://]host[:port]/repository[:tag|@digest]")
      .option("--platform <os/arch[/variant]>", "platform to pick from an index (default: this machine's)"),
  ).action(run("config"));

  registryFlags(
    add("tags")
      .description("list a repository's tags")
      .argument("<repository>", "[docker://]host[:port]/repository")
      .option("--json", 'skopeo list-tags format: {"Repository", "Tags"}'),
  ).action(run("tags"));

  registryFlags(
    add("catalog")
      .description("list the repositories of a registry")
      .argument("<registry>", "host[:port]")
      .option("--json", '{"Registry", "Repositories"}'),
  ).action(run("catalog"));

  registryFlags(
    add("tag")
      .description("add a tag to an image in the same repository (only the manifest is written; no blobs copied)")
      .argument("<reference>", "[docker://]host[:port]/repository[:tag|@digest]")
      .argument("<new-tag>", "the tag to add"),
  ).action(run("tag"));

  registryFlags(
    add("untag")
      .description("delete one tag; the manifest and its other tags stay (where the registry supports it)")
      .argument("<reference>", "[docker://]host[:port]/repository:tag"),
  ).action(run("untag"));

  registryFlags(
    add("rm")
      .description("delete a manifest (a tag is resolved to its digest first, as skopeo delete does: every tag on it goes)")
      .argument("<reference>", "[docker://]host[:port]/repository:tag or @digest"),
  ).action(run("rm"));

  registryFlags(
    add("referrers")
      .description("list the OCI 1.1 referrers of an image (signatures, SBOMs, attestations)")
      .argument("<reference>", "[docker://]host[:port]/repository[:tag|@digest]")
      .option("--artifact-type <type>", "only referrers of this artifact type")
      .option("--json", "the referrers index as JSON"),
  ).action(run("referrers"));

  const blob = add("blob").description("blobs by digest");
  registryFlags(
    blob
      .command("get")
      .exitOverride()
      .description("download a blob (verified against its digest) to stdout or a file")
      .argument("<reference>", "[docker://]host[:port]/repository@digest")
      .option("-o, --output <file>", "write to this file instead of stdout"),
  ).action(run("blobGet"));
}
