/** The web UI's endpoints: the built front end at /ui/, its JSON API and GC under /ferry/v1 (config `ui.enabled`). */
import type { Extension } from "../http/app.js";
import type { RegistryDeps } from "../registry/context.js";
import type { GcReport } from "../registry/gc.js";
import { browseExtensions } from "./api.js";
import { gcExtensions, type GcLog } from "./gc.js";
import { DEFAULT_UI_DIR, UiFiles, uiExtensions } from "./static.js";

export async function webUiExtensions(deps: RegistryDeps, gcLog: GcLog, gc: () => Promise<GcReport>, uiDir = DEFAULT_UI_DIR): Promise<Extension[]> {
  // A broken build must not stop the registry: /ui/ then answers 404 and the log says why.
  const files = await UiFiles.load(uiDir).catch((error: unknown) => {
    deps.logger.error({ err: error, dir: uiDir }, "could not load the web UI's files; /ui/ answers 404");
    return null;
  });
  if (!files) deps.logger.warn({ dir: uiDir }, "the web UI is not built (npm run build:ui); /ui/ answers 404");
  return [...uiExtensions(files), ...browseExtensions(deps), ...gcExtensions(gcLog, gc)];
}
