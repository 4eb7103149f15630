/**
 * A RegistryClient for one host with the right credentials (given, or stored
 * in the Docker config / its credential helper), TLS settings and warning
 * hook. Kept apart from index.ts so commands that only talk to a registry
 * (tags, digest, ...) do not load the layout, archive and copy modules.
 */
import { getCredentials, dockerConfigPath, type Credentials } from "./credentials.js";
import type { TlsSettings } from "./http.js";
import { RegistryClient } from "./registry.js";

export interface ConnectOptions {
  /** Plain HTTP (loopback hosts use HTTP unless TLS settings are given). */
  insecure?: boolean;
  /** Docker config.json path (default $DOCKER_CONFIG or ~/.docker); `--authfile`. */
  configPath?: string;
  /** Credentials to use instead of the stored ones (`--creds`). */
  credentials?: Credentials;
  /** HTTPS settings; implies HTTPS even on loopback. */
  tls?: TlsSettings;
  /** The registry's `Warning` headers. */
  onWarning?: (registry: string, text: string) => void;
}

export async function connect(host: string, options: ConnectOptions = {}): Promise<RegistryClient> {
  const credentials = options.credentials ?? (await getCredentials(host, options.configPath ?? dockerConfigPath()));
  const onWarning = options.onWarning;
  return new RegistryClient({
    registry: host,
    insecure: options.insecure,
    ...(credentials ? { credentials } : {}),
    ...(options.tls ? { tls: options.tls } : {}),
    ...(onWarning ? { onWarning: (text: string) => onWarning(host, text) } : {}),
  });
}
