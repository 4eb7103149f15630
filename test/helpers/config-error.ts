/** The message of the ConfigError a configuration step throws; fails the test when it is accepted or throws something else. */
import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/load.js";

export function configErrorMessage(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof ConfigError, `a ConfigError, got ${String(error)}`);
    return error.message;
  }
  assert.fail("the configuration was accepted");
}
