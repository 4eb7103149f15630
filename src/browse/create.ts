/** The web UI's endpoints: the built front end at /ui/, its JSON API and GC under /ferry/v1 (config `ui.enabled`). */
import type { Extension } from "../http/app.js";
import type { RegistryDeps } from "../registry/context.js";
import type { GcReport } from "../registry/gc.js";
import { browseExtensions } from "./api.js";
import { gcExtensions, type GcLog } from "./gc.js";
import { DEFAULT_UI_DIR, UiFiles, uiExtensions } from "./static.js";

export async function webUiExtensions(deps: RegistryDeps, gcLog: GcLog, gc: () => Promise<GcReport>, uiDir = DEFAULT_UI_DIR): Promise<Extension[]> {
  const files = await UiFiles.load(uiDir);
  if (!files) deps.logger.warn({ dir: uiDir }, "the web UI is not built (npm run build:ui); /ui/ answers 404");
  return [...uiExtensions(files), ...browseExtensions(deps), ...gcExtensions(gcLog, gc)];
}
