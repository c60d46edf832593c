#!/usr/bin/env bash
# A/B of 2 x 7B merges (bench/hf-llm.ts models and configs, generated once by `node dist/bench/run.js
# --scenarios slerp-mistral7b,ties-mistral7b --dir DIR --no-reference`): alternates the configurations
# every round, each a fresh `node dist/bench/hf-child.js`, and prints wall, user, sys, disk reads, peak
# private memory and engine phase times per run. ENV: space-separated VAR=value pairs, or "-".
# usage: DIR=/work/bench-hf7b ROUNDS=3 SCEN=slerp-mistral7b [COLD=1] bench/ab-hf.sh label=ENV ...   (from the repository root)
set -u
ROUNDS=${ROUNDS:-3}; SCEN=${SCEN:-slerp-mistral7b}; D=${DIR:-/work/bench-hf7b}
INPUTS=$(ls $D/mistral7b-A/*.safetensors $D/mistral7b-B/*.safetensors)
evict() { python3 - "$@" <<'PY'
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
PY
}
for r in $(seq 1 "$ROUNDS"); do
  for cfg in "$@"; do
    label=${cfg%%=*}; envs=${cfg#*=}; [ "$envs" = "-" ] && envs=""
    OUT=${OUT_DIR:-$D}/ab-out-$SCEN; rm -rf $OUT
    if [ "${COLD:-0}" = 1 ]; then sync; evict $INPUTS; fi
    line=$(env $envs node dist/bench/hf-child.js "{\"config\":\"$D/$SCEN.yml\",\"out\":\"$OUT\",\"shardSize\":\"5GB\",\"threads\":2}" | tail -n 1)
    rm -rf $OUT
    node -e 'const j=JSON.parse(process.argv[1]); if(j.error){console.log(process.argv[2],"ERROR",JSON.stringify(j.error));process.exit(0)} const e=j.engineStats||{}; console.log(process.argv[2].padEnd(10), "r", process.argv[3], "wall", j.seconds.toFixed(2), "user", j.cpuUser.toFixed(2), "sys", j.cpuSystem.toFixed(2), "disk", (j.diskReadBytes/1e9).toFixed(2), "anon", (j.peak.anon/1048576).toFixed(0)+"MiB", "reduce", (e.secondsReduce||0).toFixed(1), "compute", (e.secondsCompute||0).toFixed(1), "waitW", (e.secondsWaitWriter||0).toFixed(1), "touched", ((e.bytesStatisticsTouched||0)/1e9).toFixed(1), "load", require("os").loadavg()[0].toFixed(1))' "$line" "$label" "$r"
  done
done
