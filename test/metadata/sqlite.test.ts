import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SqliteMetaStore } from "../../src/metadata/sqlite.js";
import { metaStoreSuite } from "./meta-store-suite.js";

metaStoreSuite("sqlite", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ferry-meta-"));
  return { meta: new SqliteMetaStore(join(dir, "metadata.db")), cleanup: () => rm(dir, { recursive: true, force: true }) };
});
