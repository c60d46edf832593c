/**
 * Loaded before every test file (.mocharc.json "require"): the hash cache lives in a temporary
 * folder, so no test writes outside one (child CLI processes inherit the variable).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

if (!process.env.TENSORMERGE_CACHE_DIR) {
  const dir = mkdtempSync(join(tmpdir(), "tm-cache-"));
  process.env.TENSORMERGE_CACHE_DIR = dir;
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
}
