#!/usr/bin/env node
/**
 * Builds the prebuilt addon that `npm pack` ships (the `prepack` hook; also `npm run prebuild`),
 * offline: cmake-js takes the Node-API headers from the node-api-headers package, as the local
 * build does, so nothing is downloaded (prebuildify would fetch Node headers for node-gyp).
 *
 * Output: prebuilds/<platform>-<arch>/node.napi[.glibc|.musl].node, the name node-gyp-build
 * picks for any Node version with Node-API 8 (tags: see parseTags/matchTags in
 * node_modules/node-gyp-build/node-gyp-build.js; on Linux the libc tag keeps a glibc binary off
 * musl systems, which then build from source). The glibc and libstdc++ versions it needs are
 * printed (and are in the README). libstdc++ stays a shared library: Node itself links it, and
 * linking it statically would pull in newer glibc symbols (GCC 12's libstdc++.a needs glibc
 * 2.36 for arc4random, 2.35 for _dl_find_object, against 2.34 for the shared link).
 *
 * Built in build/prebuild, a Release configuration of its own: a developer's `build/` may be
 * configured with sanitizers or tests (TENSORMERGE_SANITIZE applies to the core library).
 * Incremental: a second run only rebuilds what changed.
 */
"use strict";
const { execFileSync, spawnSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const root = path.resolve(__dirname, "..");

/** "glibc" or "musl" as node-gyp-build decides it (LIBC env, else /etc/alpine-release). */
function libcTag() {
  if (process.platform !== "linux") return undefined;
  return process.env.LIBC || (fs.existsSync("/etc/alpine-release") ? "musl" : "glibc");
}

/** The highest `<prefix>x.y[.z]` symbol version the binary imports (objdump -T), or undefined. */
function highestVersion(dump, prefix) {
  const versions = [...dump.matchAll(new RegExp(`\\(${prefix}(\\d+(?:\\.\\d+)*)\\)`, "g"))].map((m) => m[1].split(".").map(Number));
  const cmp = (a, b) => { for (let i = 0; i < Math.max(a.length, b.length); i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0); return 0; };
  versions.sort(cmp);
  return versions.at(-1)?.join(".");
}

/** "glibc >= 2.33, libstdc++ GLIBCXX_3.4.30" for a Linux binary, from its dynamic symbols. */
function libcNeeds(file) {
  let dump;
  try {
    dump = execFileSync("objdump", ["-T", file], { encoding: "utf8" });
  } catch {
    return undefined; // no binutils: nothing to report
  }
  const glibc = highestVersion(dump, "GLIBC_");
  const cxx = highestVersion(dump, "GLIBCXX_");
  return [glibc && `glibc >= ${glibc}`, cxx && `libstdc++ with GLIBCXX_${cxx}`].filter(Boolean).join(", ");
}

function main() {
  const out = path.join(root, "build", "prebuild");
  const cmakeJs = require.resolve("cmake-js/bin/cmake-js", { paths: [root] });
  const args = [cmakeJs, "compile", "--out", out, "--config", "Release"];
  const built = spawnSync(process.execPath, args, { cwd: root, stdio: ["ignore", "inherit", "inherit"] });
  if (built.status !== 0) {
    console.error("prebuild: cmake-js failed (cmake and a C++17 compiler are needed to make a prebuild)");
    process.exit(1);
  }
  const binary = path.join(out, "Release", "tensormerge.node");
  const libc = libcTag();
  const dir = path.join(root, "prebuilds", `${process.platform}-${process.arch}`);
  const target = path.join(dir, ["node", "napi", libc, "node"].filter(Boolean).join("."));
  fs.rmSync(path.join(root, "prebuilds"), { recursive: true, force: true }); // one binary, never a stale one beside it
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(binary, target);
  // Debug symbols are most of the size; the dynamic symbol table (napi_register_module_v1) stays.
  const strip = spawnSync("strip", [process.platform === "darwin" ? "-x" : "--strip-unneeded", target], { stdio: "inherit" });
  if (strip.error || strip.status !== 0) console.warn("prebuild: strip is not available; the prebuild keeps its symbols");
  const needs = libc === "glibc" ? libcNeeds(target) : undefined;
  const size = fs.statSync(target).size;
  console.log(`prebuild: ${path.relative(root, target)} (${(size / 1024).toFixed(0)} KiB${needs ? `; needs ${needs}` : ""})`);
}

main();
