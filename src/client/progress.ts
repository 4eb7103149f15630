/**
 * Renders copy events: bars per blob with throughput on a terminal, one line
 * per finished blob otherwise, JSON lines for scripts, or nothing (--quiet).
 * Progress goes to stderr so stdout stays for results (and JSON).
 */
import { createRequire } from "node:module";
import type cliProgressModule from "cli-progress";
import type { ProgressEvent } from "./image.js";

/** cli-progress is loaded only for terminal output, not by every `ferry` run. */
function loadCliProgress(): typeof cliProgressModule {
  return createRequire(import.meta.url)("cli-progress") as typeof cliProgressModule;
}

export type OutputMode = "tty" | "plain" | "json" | "quiet";

export interface Reporter {
  onEvent(event: ProgressEvent): void;
  finish(): void;
}

export function chooseOutputMode(flags: { quiet?: boolean; json?: boolean }, stream: NodeJS.WriteStream = process.stderr): OutputMode {
  if (flags.json) return "json";
  if (flags.quiet) return "quiet";
  return stream.isTTY ? "tty" : "plain";
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

export function shortDigest(digest: string): string {
  const colon = digest.indexOf(":");
  return digest.slice(colon + 1, colon + 13);
}

export function createReporter(mode: OutputMode, err: NodeJS.WritableStream = process.stderr, out: NodeJS.WritableStream = process.stdout): Reporter {
  if (mode === "quiet") return { onEvent: () => undefined, finish: () => undefined };
  if (mode === "json") {
    return {
      onEvent(event) {
        if (event.type !== "blob-progress") out.write(`${JSON.stringify(event)}\n`);
      },
      finish: () => undefined,
    };
  }
  if (mode === "plain") return plainReporter(err);
  return ttyReporter(err);
}

function plainReporter(err: NodeJS.WritableStream): Reporter {
  const started = new Map<string, number>();
  return {
    onEvent(event) {
      switch (event.type) {
        case "blob-start":
          started.set(event.digest, Date.now());
          break;
        case "blob-done": {
          const seconds = Math.max(0.001, (Date.now() - (started.get(event.digest) ?? Date.now())) / 1000);
          const rate = event.outcome === "copied" ? ` in ${seconds.toFixed(1)}s (${formatBytes(event.size / seconds)}/s)` : "";
          if (event.outcome !== "foreign-skipped") err.write(`${event.outcome} ${event.digest} ${formatBytes(event.size)}${rate}\n`);
          break;
        }
        case "source-failed":
          err.write(`source failed for ${shortDigest(event.digest)}: ${event.source}: ${event.error}\n`);
          break;
        case "manifest":
          err.write(`manifest ${event.digest}\n`);
          break;
        case "notice":
          err.write(`notice: ${event.message}\n`);
          break;
        case "warning":
          err.write(`warning from ${event.registry}: ${event.message}\n`);
          break;
      }
    },
    finish: () => undefined,
  };
}

function ttyReporter(err: NodeJS.WritableStream): Reporter {
  const cliProgress = loadCliProgress();
  const multibar = new cliProgress.MultiBar(
    {
      format: "{digest} |{bar}| {percentage}% {done}/{size} {speed}",
      hideCursor: true,
      clearOnComplete: false,
      stream: err,
      barsize: 30,
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  );
  const bars = new Map<string, { bar: cliProgressModule.SingleBar; started: number }>();
  // The bars hide the cursor and turn line wrap off; Ctrl-C must give the terminal back as it was.
  let stopped = false;
  const interrupted = (code: number) => () => {
    if (!stopped) {
      stopped = true;
      multibar.stop();
    }
    err.write("\ninterrupted\n");
    process.exit(code);
  };
  const onInterrupt = interrupted(130);
  const onTerminate = interrupted(143);
  process.once("SIGINT", onInterrupt);
  process.once("SIGTERM", onTerminate);
  const payload = (digest: string, bytes: number, size: number, started: number) => {
    const seconds = Math.max(0.001, (Date.now() - started) / 1000);
    return { digest: shortDigest(digest), done: formatBytes(bytes), size: formatBytes(size), speed: `${formatBytes(bytes / seconds)}/s` };
  };
  return {
    onEvent(event) {
      switch (event.type) {
        case "blob-start": {
          const started = Date.now();
          bars.set(event.digest, { bar: multibar.create(Math.max(1, event.size), 0, payload(event.digest, 0, event.size, started)), started });
          break;
        }
        case "blob-progress": {
          const entry = bars.get(event.digest);
          entry?.bar.update(event.bytes, payload(event.digest, event.bytes, event.size, entry.started));
          break;
        }
        case "blob-done": {
          const entry = bars.get(event.digest);
          if (entry) entry.bar.update(Math.max(1, event.size), { ...payload(event.digest, event.size, event.size, entry.started), speed: event.outcome });
          else if (event.outcome === "foreign-skipped") multibar.log(`${shortDigest(event.digest)} foreign, skipped\n`);
          break;
        }
        case "source-failed":
          multibar.log(`source failed for ${shortDigest(event.digest)}: ${event.source}: ${event.error}\n`);
          break;
        case "notice":
          multibar.log(`notice: ${event.message}\n`);
          break;
        case "warning":
          multibar.log(`warning from ${event.registry}: ${event.message}\n`);
          break;
        case "manifest":
          break;
      }
    },
    finish() {
      stopped = true;
      process.off("SIGINT", onInterrupt);
      process.off("SIGTERM", onTerminate);
      multibar.stop();
    },
  };
}
