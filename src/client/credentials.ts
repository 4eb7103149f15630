/**
 * Registry credentials in Docker's `config.json` format, so `ferry login`,
 * `docker login`, `podman login --authfile` and skopeo share one file.
 * Location: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
 * Credential helpers (`credHelpers[host]`, then `credsStore`) are the
 * `docker-credential-<name>` programs of docker/docker-credential-helpers:
 * `get` reads the server URL on stdin and prints {"Username","Secret"};
 * `store` reads {"ServerURL","Username","Secret"}; `erase` reads the URL.
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";

export interface Credentials {
  username: string;
  password: string;
}

export interface DockerConfig {
  auths?: Record<string, { auth?: string; identitytoken?: string; username?: string; password?: string }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [key: string]: unknown;
}

export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.DOCKER_CONFIG && env.DOCKER_CONFIG !== "" ? env.DOCKER_CONFIG : join(homedir(), ".docker");
  return join(dir, "config.json");
}

export async function readDockerConfig(path = dockerConfigPath()): Promise<DockerConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw error;
  }
  try {
    const parsed: unknown = JSON.parse(text);
    return typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? (parsed as DockerConfig) : {};
  } catch (error) {
    throw new Error(`${path} is not valid JSON: ${(error as Error).message}`);
  }
}

async function writeDockerConfig(config: DockerConfig, path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temp = `${path}.${process.pid}.tmp`;
  await writeFile(temp, `${JSON.stringify(config, null, "\t")}\n`, { mode: 0o600 });
  await rename(temp, path);
}

/** Docker Hub's credentials are stored under its historical key. */
function configKeys(registry: string): string[] {
  if (registry === "docker.io" || registry === "index.docker.io" || registry === "registry-1.docker.io") {
    return ["https://index.docker.io/v1/", "index.docker.io", "docker.io"];
  }
  return [registry, `https://${registry}`, `http://${registry}`];
}

function helperFor(config: DockerConfig, registry: string): string | undefined {
  for (const key of configKeys(registry)) {
    const helper = config.credHelpers?.[key];
    if (helper) return helper;
  }
  return config.credsStore || undefined;
}

async function runHelper(helper: string, action: "get" | "store" | "erase", input: string): Promise<string> {
  // Loaded only when a helper is configured: most commands never start a process.
  const { spawn } = await import("node:child_process");
  return new Promise((resolve, reject) => {
    const child = spawn(`docker-credential-${helper}`, [action], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString("utf8")));
    child.stderr.on("data", (chunk: Buffer) => (err += chunk.toString("utf8")));
    child.on("error", (error) => reject(new Error(`credential helper docker-credential-${helper}: ${error.message}`)));
    child.on("close", (code) => {
      if (code === 0) resolve(out);
      // Helpers print "credentials not found in native keychain" on stdout for a miss.
      else reject(new HelperError(helper, (out || err).trim(), code ?? -1));
    });
    child.stdin.end(input);
  });
}

class HelperError extends Error {
  constructor(helper: string, readonly output: string, readonly exitCode: number) {
    super(`credential helper docker-credential-${helper} failed (exit ${exitCode}): ${output.slice(0, 200)}`);
  }
  get notFound(): boolean {
    return /credentials not found/i.test(this.output);
  }
}

/** Credentials for a registry host, or undefined for anonymous access. */
export async function getCredentials(registry: string, path = dockerConfigPath()): Promise<Credentials | undefined> {
  const config = await readDockerConfig(path);
  const helper = helperFor(config, registry);
  if (helper) {
    for (const key of configKeys(registry)) {
      try {
        const parsed = JSON.parse(await runHelper(helper, "get", key)) as { Username?: string; Secret?: string };
        if (parsed.Secret) return { username: parsed.Username ?? "", password: parsed.Secret };
      } catch (error) {
        if (error instanceof HelperError && error.notFound) continue;
        throw error;
      }
    }
    return undefined;
  }
  for (const key of configKeys(registry)) {
    const entry = config.auths?.[key];
    if (!entry) continue;
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon > 0) return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    }
    if (entry.username && entry.password) return { username: entry.username, password: entry.password };
  }
  return undefined;
}

export async function storeCredentials(registry: string, credentials: Credentials, path = dockerConfigPath()): Promise<void> {
  const config = await readDockerConfig(path);
  const key = configKeys(registry)[0]!;
  const helper = helperFor(config, registry);
  if (helper) {
    await runHelper(helper, "store", JSON.stringify({ ServerURL: key, Username: credentials.username, Secret: credentials.password }));
    // Docker records an empty entry so that `docker logout` knows the host.
    config.auths = { ...config.auths, [key]: {} };
  } else {
    const auth = Buffer.from(`${credentials.username}:${credentials.password}`, "utf8").toString("base64");
    config.auths = { ...config.auths, [key]: { auth } };
  }
  await writeDockerConfig(config, path);
}

/** Removes stored credentials; returns false when there were none. */
export async function eraseCredentials(registry: string, path = dockerConfigPath()): Promise<boolean> {
  const config = await readDockerConfig(path);
  let found = false;
  const helper = helperFor(config, registry);
  for (const key of configKeys(registry)) {
    if (helper) {
      try {
        await runHelper(helper, "erase", key);
        found = true;
      } catch (error) {
        if (!(error instanceof HelperError && error.notFound)) throw error;
      }
    }
    if (config.auths && key in config.auths) {
      delete config.auths[key];
      found = true;
    }
  }
  if (found) await writeDockerConfig(config, path);
  return found;
}
