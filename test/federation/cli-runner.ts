/** Runs the built `ferry` CLI with its own Docker config directory (stored credentials). */
import { execFile } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";

const CLI = new URL("../../src/cli/main.js", import.meta.url).pathname;

export function ferry(args: string[], options: { dockerConfig?: string; stdin?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env, DOCKER_CONFIG: options.dockerConfig ?? join(tmpdir(), "ferry-no-docker-config") };
    const child = execFile(process.execPath, [CLI, ...args], { env }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
    child.stdin?.end(options.stdin ?? "");
  });
}
