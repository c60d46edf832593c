#!/usr/bin/env node
/**
 * The npm `install` hook. An installed package uses its prebuilt addon when one loads on this
 * machine (prebuilds/<platform>-<arch>/, via node-gyp-build: a dlopen, so a too-old glibc
 * counts as no prebuild) and compiles nothing. Otherwise, and always in a git checkout (where
 * `npm ci` builds from source, as before), it builds with cmake-js when the build tools are
 * installed. Never fails the install: without an addon the TS engine is used.
 *
 * The build tools (cmake-js, node-addon-api, node-api-headers) are devDependencies: a user of
 * a prebuilt package downloads none of them. To build from source elsewhere:
 *   npm install cmake-js node-addon-api node-api-headers && npm rebuild tensormerge
 */
"use strict";
const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const root = path.resolve(__dirname, "..");
const checkout = fs.existsSync(path.join(root, ".git")); // npm never packs .git
const buildFlag = process.env.TENSORMERGE_BUILD_FROM_SOURCE === "1";

function loadsPrebuild() {
  try {
    const nodeGypBuild = require("node-gyp-build");
    const file = nodeGypBuild.resolve(root);
    require(file); // dlopen: a missing glibc or libstdc++ symbol version fails here
    return file;
  } catch {
    return undefined;
  }
}

function resolveCmakeJs() {
  try {
    return require.resolve("cmake-js/bin/cmake-js", { paths: [root] });
  } catch {
    return undefined;
  }
}

function main() {
  if (!checkout && !buildFlag) {
    const file = loadsPrebuild();
    if (file) return; // silent, as any install that needs nothing
  }
  const cmakeJs = resolveCmakeJs();
  const where = `${process.platform}-${process.arch}`;
  if (!cmakeJs) {
    console.warn(
      `tensormerge: no prebuilt native engine loads on ${where}, and the build tools are not installed; ` +
        "the TS engine will be used (7-20x slower). To build the addon (needs cmake and a C++17 compiler): " +
        "npm install cmake-js node-addon-api node-api-headers && npm rebuild tensormerge",
    );
    return;
  }
  const built = spawnSync(process.execPath, [cmakeJs, "compile", "--out", "build"], { cwd: root, stdio: "inherit" });
  if (built.status !== 0) {
    console.warn("tensormerge: the native addon could not be built (cmake and a C++17 compiler are needed); the TS engine will be used");
  }
}

main();
