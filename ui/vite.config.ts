// Builds the web UI into dist/ui (served by `ferry serve` at /ui/). Run by `npm run build:ui`, which `prepare` runs.
import { defineConfig, type Plugin } from "vite";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

/** The budget for the first load (index.html + the JS and CSS it loads), gzip-compressed. */
const FIRST_LOAD_BUDGET = 150 * 1024;

/** Prints the compressed first-load size and fails the build when it is over budget. */
function firstLoadBudget(): Plugin {
  return {
    name: "ferry-first-load-budget",
    generateBundle(_options, bundle) {
      let total = 0;
      for (const file of Object.values(bundle)) {
        const initial = file.type === "asset" ? /\.(html|css)$/.test(file.fileName) : file.isEntry || file.name === "index";
        if (!initial) continue;
        const source = file.type === "asset" ? file.source : file.code;
        total += gzipSync(typeof source === "string" ? Buffer.from(source) : Buffer.from(source), { level: 9 }).length;
      }
      this.info(`first load ${(total / 1024).toFixed(1)} KiB gzip (budget ${FIRST_LOAD_BUDGET / 1024} KiB)`);
      console.log(`ui: first load ${(total / 1024).toFixed(1)} KiB gzip (budget ${FIRST_LOAD_BUDGET / 1024} KiB)`);
      if (total > FIRST_LOAD_BUDGET) this.error(`the UI's first load is ${total} bytes gzip, over the ${FIRST_LOAD_BUDGET}-byte budget`);
    },
  };
}

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "/ui/",
  // Preact's JSX without a plugin: esbuild's automatic runtime.
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  resolve: { alias: { react: "preact/compat", "react-dom": "preact/compat" } },
  logLevel: "warn",
  build: {
    outDir: fileURLToPath(new URL("../dist/ui", import.meta.url)),
    emptyOutDir: true,
    target: "es2020",
    // No inline scripts or styles: the page's Content-Security-Policy allows 'self' only.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
  plugins: [firstLoadBudget()],
});
