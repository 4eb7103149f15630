/**
 * Serves the built web UI (ui/, built by `npm run build:ui` into dist/ui) at
 * /ui/. The files are read once at start-up into memory (with a gzip copy);
 * a request can only ever name one of them, so no path from a request
 * reaches the filesystem (no traversal by construction). Hashed assets
 * (assets/NAME-HASH.ext) are cached for a year; index.html is revalidated.
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import type { Extension } from "../http/app.js";
import { send } from "../http/respond.js";
import { RegistryError } from "../oci/errors.js";

/** dist/src/browse/static.js → dist/ui */
export const DEFAULT_UI_DIR = fileURLToPath(new URL("../../ui/", import.meta.url));

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".txt": "text/plain; charset=utf-8",
  ".woff2": "font/woff2",
};

/** The UI's files total a few hundred KiB; refuse to load a directory that is far bigger. */
const MAX_TOTAL_BYTES = 16 * 1024 * 1024;

/** What the browser may do with our pages: nothing from elsewhere, no framing. */
const SECURITY_HEADERS = {
  "X-Content-Type-Options": "nosniff",
  "Content-Security-Policy":
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
  "Referrer-Policy": "no-referrer",
  "X-Frame-Options": "DENY",
};

interface UiFile {
  type: string;
  body: Buffer;
  gzip: Buffer | null;
  immutable: boolean;
}

export class UiFiles {
  private constructor(readonly files: Map<string, UiFile>) {}

  /** Loads every file under `dir`; null when the UI was not built (no index.html). */
  static async load(dir: string): Promise<UiFiles | null> {
    const index = await stat(join(dir, "index.html")).catch(() => null);
    if (!index) return null;
    const files = new Map<string, UiFile>();
    let total = 0;
    for (const path of await walk(dir)) {
      const body = await readFile(path);
      total += body.length;
      if (total > MAX_TOTAL_BYTES) throw new Error(`the UI directory ${dir} holds more than ${MAX_TOTAL_BYTES} bytes`);
      const name = relative(dir, path).split(sep).join("/");
      const ext = name.slice(name.lastIndexOf("."));
      const type = TYPES[ext] ?? "application/octet-stream";
      const compressible = /^(text\/|application\/json|image\/svg)/.test(type) && body.length > 512;
      files.set(name, { type, body, gzip: compressible ? gzipSync(body, { level: 9 }) : null, immutable: name.startsWith("assets/") });
    }
    return new UiFiles(files);
  }

  /** The file a /ui/ path names ("" and "index.html" are the page), or undefined. */
  lookup(path: string): UiFile | undefined {
    const name = path === "" ? "index.html" : path;
    return this.files.get(name);
  }
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

export function uiExtensions(files: UiFiles | null): Extension[] {
  return [
    {
      method: ["GET", "HEAD"],
      path: /^\/ui$/,
      access: null,
      async handle(ctx) {
        send(ctx.res, 301, { Location: "/ui/", "Content-Length": 0 });
      },
    },
    {
      method: ["GET", "HEAD"],
      path: /^\/ui\/(.*)$/,
      access: null,
      async handle(ctx, match) {
        if (!files) {
          throw new RegistryError("UNSUPPORTED", "the web UI is not built: run `npm run build:ui` (npm install does it)", { status: 404 });
        }
        const file = files.lookup(match[1]!);
        if (!file) throw new RegistryError("UNSUPPORTED", "no such file in the web UI", { status: 404 });
        const gzip = file.gzip !== null && acceptsGzip(ctx.req.headers["accept-encoding"]);
        const body = gzip ? file.gzip! : file.body;
        const headers: Record<string, string | number> = {
          ...SECURITY_HEADERS,
          "Content-Type": file.type,
          "Content-Length": body.length,
          "Cache-Control": file.immutable ? "public, max-age=31536000, immutable" : "no-cache",
          Vary: "Accept-Encoding",
        };
        if (gzip) headers["Content-Encoding"] = "gzip";
        send(ctx.res, 200, headers, ctx.method === "HEAD" ? undefined : body);
      },
    },
  ];
}

function acceptsGzip(header: string | undefined): boolean {
  if (!header) return false;
  return header.split(",").some((part) => {
    const [coding, ...params] = part.trim().toLowerCase().split(";");
    if (coding !== "gzip" && coding !== "*") return false;
    return !params.some((p) => /^\s*q=0(\.0*)?\s*$/.test(p));
  });
}
