#!/usr/bin/env bash
# Builds the libFuzzer targets with clang++ in build/fuzz and runs each for SECONDS, one after the
# other, on one core each time.
#   fuzz/run_fuzzers.sh SECONDS [TARGET...]     TARGET: control_codec, test_params, server_report
#                                               (default: all three)
# Starts from the committed corpus fuzz/corpus/<target>/ (read only); inputs that find new
# coverage go to build/fuzz/scratch/<target>/ (kept between runs, never committed). Anything that
# breaks a target (crash-*, leak-*, timeout-*, oom-*) is written into fuzz/corpus/<target>/, where
# the fuzz-replay tests of every build will run it from then on. Exits non-zero if any target
# broke. Logs: build/fuzz/logs/<target>.log.
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 SECONDS [TARGET...]" >&2
  exit 2
fi
seconds=$1
shift
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(control_codec test_params server_report)
fi

root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build/fuzz

echo "== configure and build ($build)"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPROXY_FUZZ=ON -DPROXY_WERROR=ON >/dev/null
cmake --build "$build" --target "${targets[@]/%/_fuzzer}"

export ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

mkdir -p "$build/logs"
status=0
for target in "${targets[@]}"; do
  corpus=$root/fuzz/corpus/$target
  scratch=$build/scratch/$target
  log=$build/logs/$target.log
  mkdir -p "$scratch"
  # server_report has its own dictionary; the codec and params targets share the params keys.
  dict=$root/fuzz/params.dict
  [[ -f $root/fuzz/$target.dict ]] && dict=$root/fuzz/$target.dict
  echo "== $target: ${seconds}s, corpus $corpus, new inputs in $scratch, log $log"
  # The first directory receives new inputs, so the committed corpus is only read.
  if "$build/fuzz/${target}_fuzzer" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
      -rss_limit_mb=2048 -dict="$dict" -artifact_prefix="$corpus/" \
      -print_final_stats=1 "$scratch" "$corpus" >"$log" 2>&1; then
    grep -E '^#[0-9]+[[:space:]]+DONE|stat::(number_of_executed_units|new_units_added)' "$log" ||
      true
  else
    echo "!! $target broke (exit $?): see $log; new artifacts:" >&2
    ls -t "$corpus" | grep -E '^(crash|leak|timeout|oom)-' | head -n 5 >&2 || true
    status=1
  fi
done
exit $status
