/** `ferry foreign check REF` (client side). Owned by the client work. */
import type { Command } from "commander";

export function registerForeignCheck(_foreign: Command): void {}
