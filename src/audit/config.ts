/**
 * Config `audit`: the audit log (docs/observability.md). On by default, in
 * `<data>/audit.log`: it records only writes and logins (never pulls), so it
 * stays small, and a trail that has to be switched on first is missing on
 * the day it is needed.
 */
import { z } from "zod";
import { size } from "../config/types.js";

export const auditConfigSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** JSON lines are appended here; defaults to `<data>/audit.log`. */
  path: z.string().min(1).optional(),
  /** Lines waiting for a slow disk, at most; beyond it lines are dropped and counted (ferry_audit_dropped_lines_total). */
  maxQueueBytes: size.refine((n) => n >= 64 * 1024 && n <= 1024 ** 3, "must be between 64KiB and 1GiB").default(8 * 1024 * 1024),
});

export type AuditConfig = z.output<typeof auditConfigSchema>;
