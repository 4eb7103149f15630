/**
 * `ferry token rotate`: adds a new token signing key to the key set the
 * replicas share through the metadata store (auth/key-set.ts). Replicas sign
 * with it within 30 seconds; tokens signed with older keys stay valid until
 * they expire, so nobody is logged out. Prints the new key's id, never the key.
 */
import type { Command } from "commander";
import type { ServerFlags } from "../server-config.js";

export function registerTokenCommands(program: Command): void {
  const token = program.command("token").description("the token signing keys replicas share through the metadata store");
  token
    .command("rotate")
    .description("add a new signing key; older keys keep verifying until their tokens expire")
    .option("-c, --config <file>", "YAML config file")
    .option("-d, --data <dir>", "data directory")
    .action(async (flags: ServerFlags) => {
      const { configFromFlags } = await import("../server-config.js");
      const { openMetaStore } = await import("../../metadata/open.js");
      const { keyStoreOf, rotateSigningKey } = await import("../../auth/key-set.js");
      const { resolve } = await import("node:path");
      const config = configFromFlags(flags);
      if (config.auth?.token.signingKey) {
        throw new Error("auth.token.signingKey is configured: that file signs, not the shared key set. Rotate by replacing the file and listing the old one in auth.token.verifyKeys");
      }
      const meta = await openMetaStore(config.metadata, resolve(config.data));
      try {
        const store = keyStoreOf(meta);
        if (!store) throw new Error("this metadata driver keeps no signing keys");
        const key = await rotateSigningKey(store, config.auth?.token.algorithm ?? "ES256");
        process.stdout.write(`signing key generation ${key.generation} (kid ${key.kid}, ${key.algorithm}) added; replicas sign with it within 30 s\n`);
      } finally {
        await meta.close();
      }
    });
}
