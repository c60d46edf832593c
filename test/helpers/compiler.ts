import { execFileSync } from "node:child_process";

/** Whether a C compiler ($CC, else cc) runs here: the bench's floor (bench/floor.c) is compiled on first use. */
export function haveCompiler(): boolean {
  try {
    execFileSync(process.env.CC ?? "cc", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
