/** `ferry foreign check REF [--verify]`: can every foreign layer of an image be fetched from its URLs? */
import type { Command } from "commander";
import { Client, closeAllConnections } from "../../client/index.js";
import { parseImageReference } from "../../oci/image-reference.js";

interface CheckFlags {
  verify?: boolean;
  json?: boolean;
  insecure?: boolean;
}

export function registerForeignCheck(foreign: Command): void {
  foreign
    .command("check")
    .description("HEAD every foreign layer URL of an image (reachability, size); --verify downloads and checks digests")
    .argument("<reference>", "host[:port]/repository[:tag|@digest]")
    .option("--verify", "download each URL and verify size and digest")
    .option("--json", "print a JSON document")
    .option("--insecure", "use plain HTTP for the registry")
    .action(async (reference: string, flags: CheckFlags) => {
      const client = new Client({ insecure: flags.insecure });
      // docker:// is accepted as by every other command.
      const results = await client.checkForeign(parseImageReference(reference.replace(/^docker:\/\//, "")), flags.verify === true);
      const failed = results.filter((r) => !r.ok).length;
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
      } else if (results.length === 0) {
        process.stdout.write("no foreign layers\n");
      } else {
        for (const { layer, urls } of results) {
          process.stdout.write(`${layer.digest} (${layer.size} bytes, ${layer.mediaType})\n`);
          for (const u of urls) {
            const what = u.ok ? `ok${u.size !== undefined ? ` ${u.size} bytes` : ""}${u.digest ? ", digest verified" : ""}` : `FAILED: ${u.error}`;
            process.stdout.write(`  ${u.url}: ${what}\n`);
          }
        }
        process.stdout.write(`${results.length - failed} of ${results.length} foreign layers reachable\n`);
      }
      if (failed > 0) process.exitCode = 1;
    })
    .hook("postAction", () => closeAllConnections());
}
