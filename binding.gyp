# node-gyp / prebuildify build of the native engine; mirrors CMakeLists.txt (which is what
# `npm run build:native` and the install script use). Per-ISA kernels are separate static
# libraries so each gets its own -m flags; no -mfma anywhere, and -ffp-contract=off everywhere:
# bit-identity with the TypeScript engine depends on unfused fp32 mul/add.
{
  "target_defaults": {
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++14"],
    "cflags": ["-fPIC", "-O3", "-ffp-contract=off", "-fno-fast-math"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-fvisibility=hidden"],
    "xcode_settings": {
      "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
      "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
      "OTHER_CFLAGS": ["-O3", "-ffp-contract=off", "-fno-fast-math"]
    }
  },
  "targets": [
    {
      "target_name": "tensormerge_kernels_avx2",
      "type": "static_library",
      "sources": ["native/core/kernels_avx2.cc"],
      "conditions": [
        ["target_arch=='x64'", { "cflags_cc": ["-mavx2", "-mf16c", "-fno-tree-vectorize"], "xcode_settings": { "OTHER_CPLUSPLUSFLAGS": ["-mavx2", "-mf16c"] } }]
      ]
    },
    {
      "target_name": "tensormerge_kernels_avx512",
      "type": "static_library",
      "sources": ["native/core/kernels_avx512.cc"],
      "conditions": [
        ["target_arch=='x64'", {
          "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mf16c", "-Wno-maybe-uninitialized", "-fno-tree-vectorize"],
          "xcode_settings": { "OTHER_CPLUSPLUSFLAGS": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mf16c"] }
        }]
      ]
    },
    {
      "target_name": "tensormerge_lowrank_avx2",
      "type": "static_library",
      "sources": ["native/core/lowrank_avx2.cc"],
      "conditions": [
        ["target_arch=='x64'", { "cflags_cc": ["-mavx2", "-mf16c"], "xcode_settings": { "OTHER_CPLUSPLUSFLAGS": ["-mavx2", "-mf16c"] } }]
      ]
    },
    {
      "target_name": "tensormerge_lowrank_avx512",
      "type": "static_library",
      "sources": ["native/core/lowrank_avx512.cc"],
      "conditions": [
        ["target_arch=='x64'", {
          "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mf16c", "-Wno-maybe-uninitialized"],
          "xcode_settings": { "OTHER_CPLUSPLUSFLAGS": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mf16c"] }
        }]
      ]
    },
    {
      "target_name": "tensormerge",
      "dependencies": ["tensormerge_kernels_avx2", "tensormerge_kernels_avx512", "tensormerge_lowrank_avx2", "tensormerge_lowrank_avx512"],
      "sources": [
        "native/binding.cc",
        "native/core/cpu.cc",
        "native/core/crc32.cc",
        "native/core/engine.cc",
        "native/core/engine_reads.cc",
        "native/core/engine_reduce.cc",
        "native/core/engine_statistics_reads.cc",
        "native/core/engine_statistics_hold.cc",
        "native/core/statistics_hold.cc",
        "native/core/engine_stream.cc",
        "native/core/errors.cc",
        "native/core/exec.cc",
        "native/core/fault_guard.cc",
        "native/core/file_io.cc",
        "native/core/job.cc",
        "native/core/kth_bracket.cc",
        "native/core/kernels_scalar.cc",
        "native/core/lowrank.cc",
        "native/core/method_kernels.cc",
        "native/core/pair_table.cc",
        "native/core/many_kernels.cc",
        "native/core/det_math.cc",
        "native/core/reductions.cc",
        "native/core/reduction_lanes.cc",
        "native/core/residency.cc",
        "native/core/slerp_fused.cc",
        "native/core/plan.cc",
        "native/core/prefetch.cc",
        "native/core/thread_pool.cc",
        "native/core/writer.cc",
        "native/core/buffer_pool.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "libraries": ["-lpthread"]
    }
  ]
}
