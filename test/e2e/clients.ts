/** Runs skopeo and podman against a test registry over plain HTTP, with isolated state. */
import { execFile } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export async function skopeo(...args: string[]): Promise<string> {
  try {
    const { stdout } = await run("skopeo", args, { maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    throw new Error(`skopeo ${args.join(" ")} failed: ${e.stderr ?? e.message}`);
  }
}

/** podman as root, no daemon: vfs storage in a private directory. */
export async function podmanRunner(): Promise<(...args: string[]) => Promise<string>> {
  const root = await mkdtemp(join(tmpdir(), "ferry-podman-"));
  const base = ["--root", join(root, "storage"), "--runroot", join(root, "run"), "--storage-driver", "vfs"];
  return async (...args: string[]) => {
    try {
      const { stdout } = await run("podman", [...base, ...args], { maxBuffer: 64 * 1024 * 1024 });
      return stdout;
    } catch (error) {
      const e = error as { stderr?: string; message: string };
      throw new Error(`podman ${args.join(" ")} failed: ${e.stderr ?? e.message}`);
    }
  };
}
