/** The `auth` config section. Absent: the registry is open (and says so at start-up). */
import { z } from "zod";

export const authConfigSchema = z.strictObject({}).passthrough();

export type AuthConfig = z.output<typeof authConfigSchema>;
