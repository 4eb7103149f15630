/** Zod helpers shared by every config section: durations and sizes with errors that say what is expected. */
import { z } from "zod";
import { parseDuration, parseSize } from "./units.js";

export const duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const ms = parseDuration(value);
  if (ms === undefined) {
    ctx.addIssue({ code: "custom", message: `"${value}" is not a duration; write e.g. 500ms, 30s, 15m, 168h or 7d` });
    return z.NEVER;
  }
  return ms;
});

export const size = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = parseSize(value);
  if (bytes === undefined) {
    ctx.addIssue({ code: "custom", message: `"${value}" is not a size; write e.g. 4MiB, 10GiB or a number of bytes` });
    return z.NEVER;
  }
  return bytes;
});
