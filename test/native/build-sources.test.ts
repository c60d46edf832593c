/**
 * The two native builds list the same sources: CMakeLists.txt (what `npm run build:native`, the
 * install script, the C++ tests and the fuzzers use) and binding.gyp (node-gyp). A .node file
 * links with undefined symbols, so a source missing from one build is not a build error: the
 * addon loads, and the first call into the missing code ends the process (binding.gyp lacked
 * kth_bracket.cc, reduction_lanes.cc and the lowrank ISA files that way).
 */
import * as assert from "assert";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const root = join(__dirname, "../../..");

interface GypTarget {
  target_name: string;
  sources?: string[];
  conditions?: [string, { cflags_cc?: string[] }][];
}

/** The sources of the core library in CMakeLists.txt, and the per-file compile options it sets. */
export function cmakeSources(text: string): { sources: string[]; options: Map<string, string[]> } {
  const list = /set\(TM_CORE_SOURCES([^)]*)\)/.exec(text)?.[1] ?? "";
  const core = /add_library\(tensormerge_core STATIC([^)]*)\)/.exec(text)?.[1] ?? "";
  const sources = [...`${list} ${core}`.matchAll(/native\/core\/[\w.]+\.cc/g)].map((m) => m[0]);
  const options = new Map<string, string[]>();
  for (const m of text.matchAll(/set_source_files_properties\((\S+) PROPERTIES COMPILE_OPTIONS "([^"]*)"\)/g)) options.set(m[1]!, m[2]!.split(";"));
  return { sources, options };
}

/** The core sources of binding.gyp (every target's, the binding itself aside), and each one-file target's x64 flags. */
export function gypSources(text: string): { sources: string[]; options: Map<string, string[]> } {
  const gyp = JSON.parse(text.split("\n").filter((l) => !l.trimStart().startsWith("#")).join("\n")) as { targets: GypTarget[] };
  const sources: string[] = [];
  const options = new Map<string, string[]>();
  for (const t of gyp.targets) {
    const own = (t.sources ?? []).filter((s) => s !== "native/binding.cc");
    sources.push(...own);
    const x64 = t.conditions?.find(([when]) => when === "target_arch=='x64'")?.[1].cflags_cc;
    if (own.length === 1 && x64) options.set(own[0]!, x64);
  }
  return { sources, options };
}

const sorted = (xs: Iterable<string>) => [...xs].sort();

describe("native: the build files list the same sources", () => {
  const cmake = cmakeSources(readFileSync(join(root, "CMakeLists.txt"), "utf8"));
  const gyp = gypSources(readFileSync(join(root, "binding.gyp"), "utf8"));
  const onDisk = readdirSync(join(root, "native/core")).filter((f) => f.endsWith(".cc")).map((f) => `native/core/${f}`);

  it("CMakeLists.txt builds every native/core source once", () => {
    assert.deepStrictEqual(sorted(cmake.sources), sorted(onDisk));
    assert.strictEqual(new Set(cmake.sources).size, cmake.sources.length);
  });

  it("binding.gyp builds the same sources", () => {
    assert.deepStrictEqual(sorted(gyp.sources), sorted(cmake.sources));
    assert.strictEqual(new Set(gyp.sources).size, gyp.sources.length);
  });

  it("binding.gyp compiles each ISA file with the flags CMakeLists.txt gives it", () => {
    assert.ok(cmake.options.size >= 4, "the per-ISA files' options were not found in CMakeLists.txt");
    for (const [file, flags] of cmake.options) assert.deepStrictEqual(gyp.options.get(file), flags, file);
  });

  it("reads the lists it compares (a file left out of one of them is seen)", () => {
    const text = readFileSync(join(root, "binding.gyp"), "utf8").replace('        "native/core/kth_bracket.cc",\n', "");
    assert.notDeepStrictEqual(sorted(gypSources(text).sources), sorted(cmake.sources));
  });
});
